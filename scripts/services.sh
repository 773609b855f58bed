#!/usr/bin/env bash
# Check that PostgreSQL, Redis and RabbitMQ answer on 127.0.0.1, starting any
# that is down. Under CI or PP_REQUIRE_SERVICES=1 a service that stays down
# fails the run; elsewhere it is reported and the scale-out tests fail on it.
set -uo pipefail
required=0
[ -n "${CI:-}" ] && required=1
[ "${PP_REQUIRE_SERVICES:-}" = "1" ] && required=1

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

postgres_up() { port_open 5432 && { ! command -v pg_isready >/dev/null || pg_isready -q -h 127.0.0.1 -p 5432; }; }
redis_up() { port_open 6379 && { ! command -v redis-cli >/dev/null || [ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" = PONG ]; }; }
rabbitmq_up() { port_open 5672; }

start_postgres() { pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start; }
start_redis() {
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
}
start_rabbitmq() { rabbitmq-server -detached; }

failed=0
for service in postgres redis rabbitmq; do
    if "${service}_up"; then
        echo "==> $service is up"
        continue
    fi
    echo "==> $service is down; starting it"
    "start_$service" >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
        "${service}_up" && break
        sleep 1
    done
    if "${service}_up"; then
        echo "==> $service is up"
    else
        echo "!!  $service did not come up" >&2
        failed=1
    fi
done
if [ "$failed" = 1 ] && [ "$required" = 1 ]; then
    echo "required services are down (CI or PP_REQUIRE_SERVICES=1)" >&2
    exit 1
fi
exit 0
