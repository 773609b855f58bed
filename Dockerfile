# Prediction Provider: one image for the API, the Celery workers and the one-off jobs
# (migrations, demo training, the Prometheus scrape key). Configuration comes from PP_*
# environment variables. Every stage starts from the same Debian release, so the gRPC C++
# libraries the front end is built against are the ones the runtime stage installs.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The Python package and its dependencies, in a virtual environment the runtime stage copies.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

# pp-grpc-frontend, the native gRPC front end (PP_GRPC_FRONTEND=native), built by the same
# script as on a developer's machine.
FROM ${PYTHON_IMAGE} AS grpc-frontend
RUN apt-get update && apt-get install -y --no-install-recommends g++ pkg-config libgrpc++-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/_venv.sh scripts/build_grpc_frontend.sh ./scripts/
COPY native ./native
RUN PP_VENV=/opt/frontend bash scripts/build_grpc_frontend.sh && test -x /opt/frontend/bin/pp-grpc-frontend

FROM ${PYTHON_IMAGE}
# libgomp1: LightGBM and XGBoost; libgrpc++1.51: pp-grpc-frontend (bookworm's gRPC C++).
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 libgrpc++1.51 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 provider \
    && mkdir -p /data /secrets && chown provider /data /secrets
COPY --from=build /opt/venv /opt/venv
# Beside the venv's python, where the server looks for it.
COPY --from=grpc-frontend /opt/frontend/bin/pp-grpc-frontend /opt/venv/bin/pp-grpc-frontend
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PP_DATA_DIR=/data \
    PP_HOST=0.0.0.0 \
    PP_PORT=8000
USER provider
WORKDIR /data
EXPOSE 8000 8001
# The liveness route on whatever port PP_PORT serves.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
    CMD python -c "import os, sys, urllib.request; port = os.environ.get('PP_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=2).status != 200)"
CMD ["prediction-provider", "serve", "--workers", "4"]
