"""Render deploy/nginx.conf for other upstream addresses and another listen address: tests and local runs.

    python deploy/render_nginx_conf.py --listen 127.0.0.1:8080 \\
        --server 127.0.0.1:9001 --server 127.0.0.1:9002 --server 127.0.0.1:9003 \\
        --runtime-dir /tmp/nginx-lb > /tmp/nginx-lb/nginx.conf
    nginx -p /tmp/nginx-lb -c /tmp/nginx-lb/nginx.conf -e stderr -g 'daemon off;'

What changes: the lines between `# upstream-servers-begin` and `# upstream-servers-end` become one
`server ADDRESS PARAMS;` line per address, PARAMS being those of the file's own server line
(`max_fails=3 fail_timeout=10s`); `listen 80;` becomes `listen ADDRESS;`. With a runtime directory, the pid
file and nginx's temporary files go there instead of /run and /var/lib/nginx, so nginx runs unprivileged and
beside another nginx (started as root, its workers run as the directory's owner, so they can use it). Nothing else changes: the locations, retries and timeouts are the ones compose uses.
"""
from __future__ import annotations

import argparse
import os
import pwd
import re
import sys
from pathlib import Path

CONF = Path(__file__).resolve().parent / "nginx.conf"
BEGIN, END = "# upstream-servers-begin", "# upstream-servers-end"
TEMP_PATHS = ("client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path")


def render(servers: list[str], listen: str | int, runtime_dir: str | Path | None = None, text: str | None = None) -> str:
    """The configuration with `servers` ("HOST:PORT") as the upstream and `listen` ("PORT" or "HOST:PORT")."""
    if not servers:
        raise ValueError("at least one upstream server")
    text = CONF.read_text() if text is None else text
    start, stop = text.index(BEGIN), text.index(END)
    block = text[start:stop]
    original = re.search(r"^\s*server\s+\S+\s*(?P<params>[^;]*);", block, re.M)
    params = original["params"].strip() if original else ""
    indent = text[text.rindex("\n", 0, start) + 1:start]
    lines = [f"{indent}server {address}{' ' + params if params else ''};" for address in servers]
    text = text[:start] + BEGIN + "\n" + "\n".join(lines) + "\n" + indent + text[stop:]
    text, count = re.subn(r"^(\s*)listen 80;\s*$", lambda m: f"{m[1]}listen {listen};", text, flags=re.M)
    if count != 1:
        raise ValueError("expected exactly one 'listen 80;' line")
    if runtime_dir is not None:
        runtime = Path(runtime_dir).resolve()
        # Started as root, nginx runs its workers as `nobody`, who cannot reach temporary files in a private
        # runtime directory (a body over 16 KB is buffered to one): keep them as the directory's owner.
        user = f"\nuser {pwd.getpwuid(runtime.stat().st_uid if runtime.exists() else 0).pw_name};" if os.geteuid() == 0 else ""
        text = text.replace("\nevents {", f"\npid {runtime / 'nginx.pid'};{user}\n\nevents {{", 1)
        temp = "".join(f"    {name} {runtime / name.removesuffix('_path')};\n" for name in TEMP_PATHS)
        text = text.replace("\nhttp {\n", "\nhttp {\n" + temp, 1)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", required=True, help="HOST:PORT of one API replica (repeat)")
    parser.add_argument("--listen", default="80", help="PORT or HOST:PORT for nginx to listen on (default 80)")
    parser.add_argument("--runtime-dir", help="where the pid file and temporary files go (default: nginx's own)")
    args = parser.parse_args(argv)
    sys.stdout.write(render(args.server, args.listen, args.runtime_dir))


if __name__ == "__main__":
    main()
