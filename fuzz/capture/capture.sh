#!/usr/bin/env bash
# Captures the seed corpora from real traffic: a real `epmd`, two real `erl` nodes that
# connect, call each other and exchange messages (cookie "autocluster-fuzz", the one the
# handshake targets check digests with), a node with a wrong cookie, a hidden node,
# `epmd -names`, and the terms the nodes encode. tcpdump records the loopback traffic;
# split.py cuts it into the inputs of each target and writes them to fuzz/corpus/.
#
# Needs: erl and epmd (erlang-nox), tcpdump, python3; run as root (tcpdump on lo).
# Usage: fuzz/capture/capture.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
corpus="$here/../corpus"
for tool in erl epmd tcpdump python3; do
    command -v "$tool" >/dev/null || { echo "capture: $tool is missing (apt-get install erlang-nox tcpdump python3)" >&2; exit 1; }
done

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
    # rabbitmq-server drops to the rabbitmq user in a session of its own: its VM is
    # reached through the pid file it writes.
    [ -s "$work/rabbit/rabbit.pid" ] && kill -9 "$(cat "$work/rabbit/rabbit.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
epmd_port=$(free_port); a_port=$(free_port); b_port=$(free_port); c_port=$(free_port)
export ERL_EPMD_PORT=$epmd_port
cookie=autocluster-fuzz

tcpdump -i lo -U -s 0 -w "$work/cap.pcap" \
    "tcp port $epmd_port or tcp port $a_port or tcp port $b_port or tcp port $c_port" 2>"$work/tcpdump.log" &
pids+=($!)
sleep 1

epmd -port "$epmd_port" &
pids+=($!)
sleep 0.5

dist() { echo "-kernel inet_dist_listen_min $1 inet_dist_listen_max $1"; }

# b: the peer everyone calls.
erl -noshell -sname b@localhost -setcookie $cookie $(dist "$b_port") &
pids+=($!)
until epmd -port "$epmd_port" -names 2>/dev/null | grep -q '^name b '; do sleep 0.2; done

# a: connects to b, calls it every way formation and health do, sends terms of every
# type, and writes the same terms as term_to_binary files.
mkdir -p "$work/terms"
erl -noshell -sname a@localhost -setcookie $cookie $(dist "$a_port") -eval "
    B = 'b@localhost',
    pong = net_adm:ping(B),
    {ok, _} = erl_epmd:names(\"localhost\"),
    _ = erl_epmd:port_please(\"b\", \"localhost\"),
    B = rpc:call(B, erlang, node, []),
    _ = erpc:call(B, lists, seq, [1, 300]),
    _ = erpc:call(B, erlang, nodes, [[visible, hidden]]),
    _ = erpc:call(B, mnesia, system_info, [is_running]),
    {badrpc, _} = rpc:call(B, no_such_module, f, []),
    Terms = [
        ok, 'a@localhost', <<>>, <<\"binary\">>, <<1:3>>, [], \"string\", [1, 2.5, x | y],
        {}, {a, b, c}, list_to_tuple(lists:seq(1, 300)), #{}, #{a => 1, <<\"k\">> => [x]},
        maps:from_list([{N, N * N} || N <- lists:seq(1, 40)]),
        0, 255, 256, -1, 1 bsl 31, 1 bsl 64, -(1 bsl 70), 1 bsl 2000, 1.5, -0.0, 1.0e300,
        self(), make_ref(), erlang:alias(), hd(erlang:ports()), fun erlang:node/0,
        fun(X) -> {X, B} end, lists:duplicate(100, <<\"x\">>), lists:seq(1, 1000),
        [{node, B}, {ttl, 61}, {metadata, #{}}], 'atom_with_utf8_ö', list_to_atom(lists:duplicate(255, \$a))
    ],
    lists:foreach(fun({I, T}) ->
        ok = file:write_file(\"$work/terms/\" ++ integer_to_list(I), term_to_binary(T)),
        ok = file:write_file(\"$work/terms/\" ++ integer_to_list(I) ++ \"-v\", term_to_binary(T, [{minor_version, 1}]))
    end, lists:zip(lists:seq(1, length(Terms)), Terms)),
    Echo = spawn(B, fun() -> receive {From, M} -> From ! {echo, M} end end),
    Ref = monitor(process, Echo),
    Echo ! {self(), Terms},
    receive {echo, _} -> ok after 5000 -> exit(no_echo) end,
    receive {'DOWN', Ref, process, _, _} -> ok after 5000 -> exit(no_down) end,
    Linked = spawn(B, fun() -> receive stop -> ok end end),
    link(Linked), unlink(Linked), exit(Linked, kill),
    yes = global:register_name(fuzz_name, self()),
    global:sync(),
    _ = global:whereis_name(fuzz_name),
    ok = net_kernel:monitor_nodes(true),
    true = erlang:disconnect_node(B),
    pong = net_adm:ping(B),
    timer:sleep(500),
    init:stop()." || { echo "capture: node a failed" >&2; exit 1; }

# c: the wrong cookie (refused after the challenge), then a hidden node.
erl -noshell -sname c@localhost -setcookie wrong-cookie $(dist "$c_port") \
    -eval "pang = net_adm:ping('b@localhost'), init:stop()."
erl -noshell -hidden -sname c@localhost -setcookie $cookie $(dist "$c_port") \
    -eval "pong = net_adm:ping('b@localhost'), _ = rpc:call('b@localhost', erlang, nodes, [hidden]), init:stop()."

epmd -port "$epmd_port" -names >/dev/null
sleep 1
kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true

# RabbitMQ registering itself in a real etcd (rabbitmq_peer_discovery_etcd): the value
# it writes for its node key seeds the etcd_value target.
for tool in etcd etcdctl rabbitmq-server; do
    command -v "$tool" >/dev/null || { echo "capture: $tool is missing (apt-get install etcd-server etcd-client rabbitmq-server)" >&2; exit 1; }
done
etcd_client=$(free_port); etcd_peer=$(free_port); amqp=$(free_port); rabbit_dist=$(free_port)
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$etcd_client" \
    --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" >"$work/etcd.log" 2>&1 &
pids+=($!)
rb="$work/rabbit"
mkdir -p "$rb/mnesia" "$rb/log" "$rb/plugins-expand"
cat >"$rb/rabbitmq.conf" <<CONF
listeners.tcp.default = $amqp
cluster_formation.peer_discovery_backend = etcd
cluster_formation.etcd.endpoints.1 = 127.0.0.1:$etcd_client
cluster_formation.etcd.cluster_name = fuzz
CONF
echo "[rabbitmq_peer_discovery_etcd]." >"$rb/enabled_plugins"
chown -R rabbitmq: "$work" 2>/dev/null || true
chmod 755 "$work"
RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_PORT=$amqp RABBITMQ_DIST_PORT=$rabbit_dist \
RABBITMQ_MNESIA_BASE="$rb/mnesia" RABBITMQ_LOG_BASE="$rb/log" \
RABBITMQ_FEATURE_FLAGS_FILE="$rb/feature_flags" RABBITMQ_PLUGINS_EXPAND_DIR="$rb/plugins-expand" \
RABBITMQ_ENABLED_PLUGINS_FILE="$rb/enabled_plugins" RABBITMQ_CONFIG_FILE="$rb/rabbitmq.conf" \
RABBITMQ_PID_FILE="$rb/rabbit.pid" RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-setcookie $cookie" \
    setsid rabbitmq-server >"$rb/console.log" 2>&1 &
rabbit_pid=$!
pids+=($rabbit_pid)
mkdir -p "$work/etcd-values"
for _ in $(seq 1 120); do
    key=$(ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$etcd_client" get --prefix /rabbitmq --keys-only 2>/dev/null | grep /nodes/ | head -1 || true)
    [ -n "$key" ] && break
    sleep 1
done
[ -n "$key" ] || { echo "capture: RabbitMQ registered no node key; its log:" >&2; tail -30 "$rb/console.log" >&2; exit 1; }
ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$etcd_client" get "$key" --print-value-only | head -c -1 >"$work/etcd-values/rabbitmq"
echo "capture: RabbitMQ wrote $key = $(cat "$work/etcd-values/rabbitmq")"

python3 "$here/split.py" "$work/cap.pcap" "$corpus" \
    --epmd-port "$epmd_port" --dist-ports "$a_port,$b_port,$c_port" --terms "$work/terms" --etcd-values "$work/etcd-values"
