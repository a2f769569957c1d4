# The publisher as a container image, for deploy/kubernetes/cronjob.yaml or any scheduler:
#   docker build -t publisher .
#   docker run --rm -v "$PWD/config.yaml:/etc/publisher/config.yaml:ro" -v publisher-state:/var/lib/publisher \
#     -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY publisher build
# The config is read from /etc/publisher/config.yaml; point its `state` at /var/lib/publisher (a volume).
FROM python:3.12-slim

# libyaml makes front matter parsing several times faster (PyYAML's wheels bundle it).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY publisher ./publisher
RUN pip install '.[s3]' && rm -rf /src

# A user of its own, without a login shell or a home to write to; the state folder is the only thing it writes.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin publisher \
    && mkdir -p /var/lib/publisher /etc/publisher && chown publisher /var/lib/publisher
USER 10001
WORKDIR /var/lib/publisher
VOLUME /var/lib/publisher

ENTRYPOINT ["publisher"]
CMD ["build", "-c", "/etc/publisher/config.yaml"]
