# seq2seq-serve: CPU torch by default; for a CUDA image build with --build-arg TORCH_INDEX= (PyPI's default
# torch wheels are CUDA builds) or use docker-compose.gpu.yml. The steps are those of `make install`:
# torch first, then the package.
FROM python:3.11-slim

ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Optional package mirrors for the build only (never baked into the image's ENV). A build argument reaches the RUN
# steps as an environment variable, and pip ignores a PIP_* variable whose value is empty, so left empty they
# change nothing. Example: --build-arg PIP_INDEX_URL=https://mirror/simple --build-arg TORCH_INDEX= (torch from
# the mirror too) or --build-arg PIP_FIND_LINKS=http://127.0.0.1:8765/ (a directory of wheels; see
# scripts/docker-smoke.sh).
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_FIND_LINKS=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEQ2SEQ_HOST=0.0.0.0 \
    SEQ2SEQ_PORT=8000 \
    SEQ2SEQ_DATA_DIR=/data \
    SEQ2SEQ_WEIGHTS_DIR=/srv/seq2seq/weights

WORKDIR /srv/seq2seq

RUN useradd --create-home --uid 10001 seq2seq \
    && mkdir -p /data \
    && chown seq2seq /data

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The version is pinned by TORCH_SPEC, which hadolint cannot see through.
# hadolint ignore=DL3013
RUN if [ -n "${TORCH_INDEX}" ]; then pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"; \
    else pip install "${TORCH_SPEC}"; fi

COPY pyproject.toml README.md ./
COPY model ./model
COPY app ./app
RUN pip install .
COPY weights ./weights

USER 10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "app"]
