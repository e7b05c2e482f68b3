"""Which filesystem a path is on, read from /proc/self/mountinfo, and the refusal of a network filesystem for
a SQLite file.

SQLite is single-host: its locks (fcntl) and WAL's shared-memory index only work between processes of one
kernel on a local disk. On NFS, SMB/CIFS, sshfs and their kind, locks are missing or advisory at best, and two
machines writing one file corrupt it silently. os.statvfs has no f_type, so the type comes from the mount
table: the mount whose mount point is the longest prefix of the resolved path (the last one wins when mounts
are stacked on one point).
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import UnsupportedLocation

MOUNTINFO = Path("/proc/self/mountinfo")
# Filesystem types (as mountinfo names them) that are shared over a network or between hosts.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
    "beegfs", "ocfs2", "gfs2", "davfs", "coda", "orangefs", "pvfs2",
    "fuse.sshfs", "fuse.glusterfs", "fuse.s3fs", "fuse.rclone", "fuse.gcsfuse", "fuse.davfs", "fuse.cephfs",
    "fuse.juicefs", "fuse.mountpoint-s3", "fuse.goofys", "fuse.blobfuse", "fuse.blobfuse2", "fuse.seaweedfs",
})
_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040 ...)."""
    return _ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """[(mount point, filesystem type)] in the table's order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        if len(fields) <= separator + 1:
            continue
        mounts.append((_unescape(fields[4]), fields[separator + 1]))
    return mounts


def filesystem_type(path: Path | str, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem `path` is on (the path need not exist: its nearest existing parent counts);
    None where there is no mount table to read (not Linux)."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    target = Path(path).resolve()
    best: tuple[int, str] | None = None
    for mount_point, fstype in parse_mountinfo(mountinfo):
        point = Path(mount_point)
        if target == point or point in target.parents:
            depth = len(point.parts)
            if best is None or depth >= best[0]:
                best = (depth, fstype)
    return best[1] if best else None


def is_network_filesystem(fstype: str | None) -> bool:
    return fstype in NETWORK_FILESYSTEMS


def refuse_network_filesystem(database: Path, mountinfo: str | None = None) -> None:
    """Raise UnsupportedLocation when the SQLite file `database` would live on a network filesystem."""
    fstype = filesystem_type(database.parent, mountinfo)
    if is_network_filesystem(fstype):
        raise UnsupportedLocation(
            f"the SQLite database {database} is on a network filesystem ({fstype}): SQLite is single-host, its "
            "locking does not work there and the file would be corrupted. Put SEQ2SEQ_DATA_DIR on a local disk, "
            "or use PostgreSQL (SEQ2SEQ_DATABASE_URL=postgresql://...) for more than one machine")
