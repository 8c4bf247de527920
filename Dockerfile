# syntax=docker/dockerfile:1
#
# The signal service image: `momentum-serve run` (scheduler, gRPC, Prometheus metrics), no
# torch, no training code.
#
#   docker build -t momentum-serve .                                  # CPU: plain onnxruntime
#   docker build -t momentum-serve:cuda --build-arg RUNTIME=cuda .    # NVIDIA CUDA + cuDNN base,
#                                                                     # onnxruntime-gpu
#   docker run --gpus all ...  (CUDA image; without a visible GPU it falls back to the CPU)
#
# Stages: base-cpu / base-cuda (the two runtimes, selected by RUNTIME) -> builder (a virtual
# environment made by deploy/install-serve.sh, the same script the install test runs) ->
# runtime (the base plus the copied environment, running as a non-root user).
#
# Python: the CPU image uses the official python image (PYTHON_VERSION); the CUDA image uses
# the Ubuntu 24.04 interpreter of the CUDA base (3.12; Ubuntu 22.04 only has 3.10, below the
# project's 3.11). The environment is built on the same base it runs on, so its interpreter
# path and shared libraries are the runtime's.

ARG RUNTIME=cpu
ARG PYTHON_VERSION=3.11
# onnxruntime-gpu wheels for CUDA 12 need cuDNN 9: use a CUDA 12 "cudnn-runtime" image
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---- runtime bases --------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS base-cpu
ENV MOMENTUM_SERVE_EXTRA=serve-cpu \
    PYTHON=/usr/local/bin/python3

FROM ${CUDA_IMAGE} AS base-cuda
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV MOMENTUM_SERVE_EXTRA=serve \
    PYTHON=/usr/bin/python3

# RUNTIME=cpu or RUNTIME=cuda; BuildKit only builds the base that is named here
FROM base-${RUNTIME} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ---- builder: the virtual environment ------------------------------------------------------
FROM base AS builder
WORKDIR /src
# Only what the service distribution needs (.dockerignore keeps the rest out of the context):
# no training/, tests/, bench/ or runs/, so the wheel carries momentum and service alone.
COPY pyproject.toml README.md ./
COPY momentum ./momentum
COPY service ./service
COPY deploy/install-serve.sh ./deploy/install-serve.sh
RUN bash ./deploy/install-serve.sh "${MOMENTUM_SERVE_EXTRA}" /opt/venv

# ---- runtime --------------------------------------------------------------------------------
FROM base AS runtime
ARG RUNTIME
LABEL org.opencontainers.image.title="momentum-serve" \
      org.opencontainers.image.description="Deep-momentum signal service (ONNX inference, gRPC, Prometheus)" \
      momentum.runtime="${RUNTIME}"

# A fixed numeric uid/gid (not 1000, which Ubuntu images give to `ubuntu`) lets Kubernetes'
# runAsNonRoot verify the user and lets hosts chown bind mounts to it.
RUN groupadd --system --gid 10001 momentum \
    && useradd --system --uid 10001 --gid momentum --home-dir /home/momentum --create-home \
        --shell /usr/sbin/nologin momentum \
    && mkdir -p /models /data \
    && chown momentum:momentum /models /data

COPY --from=builder /opt/venv /opt/venv

# MOMENTUM_*: the registry and the store live on the volumes; gRPC and the metrics listen on
# every interface of the container, so gRPC refuses to start without MOMENTUM_GRPC_TOKEN
# (or MOMENTUM_ALLOW_INSECURE=true, on purpose). NUMBA_CACHE_DIR: the venv is read-only for the service user, so numba's
# compiled-kernel cache goes to a writable directory (an emptyDir on Kubernetes).
ENV PATH=/opt/venv/bin:${PATH} \
    MOMENTUM_REGISTRY_DIR=/models \
    MOMENTUM_DATA_DIR=/data \
    MOMENTUM_GRPC_HOST=0.0.0.0 \
    MOMENTUM_GRPC_PORT=50051 \
    MOMENTUM_METRICS_HOST=0.0.0.0 \
    MOMENTUM_METRICS_PORT=9108 \
    NUMBA_CACHE_DIR=/tmp/numba-cache

# The image contract, checked in the image itself (the copied environment runs on this base):
# torch absent, onnxruntime and the health probe importable, the CLI starts.
RUN python -c "import importlib.util, sys; sys.exit('torch must not be installed' if importlib.util.find_spec('torch') else 0)" \
    && python -c "import onnxruntime, service.healthcheck; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" \
    && momentum-serve --help >/dev/null

USER 10001:10001
WORKDIR /home/momentum
VOLUME ["/models", "/data"]
EXPOSE 50051 9108

# grpc.health.v1 answers SERVING once a model is loaded; the start period covers the
# catch-up of missed sessions and the first model load.
HEALTHCHECK --interval=30s --timeout=10s --start-period=5m --retries=3 \
    CMD ["/opt/venv/bin/python", "-m", "service.healthcheck", "--timeout", "5"]

# SIGTERM (docker stop, Kubernetes) stops the scheduler, gRPC and metrics servers cleanly.
STOPSIGNAL SIGTERM
CMD ["momentum-serve", "run"]
