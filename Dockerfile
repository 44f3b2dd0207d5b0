# braintumor server image. Default: the ONNX server (ONNX Runtime, no TensorFlow: a few hundred MB).
#   docker build -t braintumor .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/export/<export>:/models:ro" -e BRAINTUMOR_API_KEY=... braintumor
# The Keras server (TensorFlow; /cam works) is a build argument:
#   docker build -t braintumor:keras --build-arg SERVER=keras --build-arg MODEL= .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/train/<run>:/models/run:ro" -e BRAINTUMOR_RUN=/models/run braintumor:keras
ARG PYTHON=3.11
FROM python:${PYTHON}-slim

# onnx: serve an exported model.onnx (mount its export folder: export.json and gates/ sit beside it);
# keras: serve a train or k-fold run directory (TensorFlow in the image, about 6x larger)
ARG SERVER=onnx
ARG MODEL=/models/model.onnx

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app
COPY pyproject.toml README.md ./
COPY braintumor ./braintumor
RUN case "$SERVER" in \
      onnx) extras=serve,onnx ;; \
      keras) extras=train,serve ;; \
      *) echo "SERVER must be onnx or keras, not $SERVER" >&2; exit 2 ;; \
    esac \
 && pip install ".[$extras]" \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin braintumor

USER 10001
# Inside a container the server must listen beyond loopback; the published port decides who reaches it.
# Settings are BRAINTUMOR_* variables (braintumor serve --help): set BRAINTUMOR_API_KEY (or mount a key file and
# set BRAINTUMOR_API_KEY_FILE) before exposing it, and BRAINTUMOR_METRICS=true for Prometheus at /metrics.
ENV BRAINTUMOR_HOST=0.0.0.0 BRAINTUMOR_PORT=8000 BRAINTUMOR_MODEL=${MODEL}
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
ENTRYPOINT ["braintumor", "serve"]
