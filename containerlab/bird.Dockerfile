# `pop-router-bird:latest`: BIRD 2 for the globex customer node of containerlab/pop-basic.clab.yml.
#   docker build -t pop-router-bird:latest -f containerlab/bird.Dockerfile containerlab
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends bird2 iproute2 iputils-ping \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /run/bird
CMD ["bird", "-f", "-c", "/etc/bird/bird.conf", "-s", "/run/bird/bird.ctl"]
