# CPU image: the embedded default (gateway + in-process transformers workers) with the shipped tiny models.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv && /opt/venv/bin/pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY atomthink ./atomthink
COPY service ./service
COPY workers ./workers
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    ATOMTHINK_HOST=0.0.0.0 ATOMTHINK_PORT=8000 \
    ATOMTHINK_POLICY_MODEL=/app/models/atomthink-tiny-policy ATOMTHINK_PRM_MODEL=/app/models/atomthink-tiny-prm
RUN useradd --create-home --uid 10001 atomthink
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY models ./models
USER atomthink
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["atomthink", "serve"]
