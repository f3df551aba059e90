#!/bin/bash
# Stands in for Kafka's tool of this name in the tansu image, for
# docker-compose.yml's health check of the kafka service
# (`kafka-broker-api-versions.sh --bootstrap-server localhost:9092`): it
# answers whether the broker accepts connections on that address.
set -eu
server=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap-server) server="$2"; shift 2 ;;
    *) shift ;;
  esac
done
[ -n "$server" ] || { echo "usage: $0 --bootstrap-server HOST:PORT" >&2; exit 2; }
exec 3<>"/dev/tcp/${server%:*}/${server##*:}"
echo "$server (tansu) accepts connections"
