# Shell functions shared by scripts/profile and scripts/relay-lab (sourced, not run).
# The caller sets: out (output directory), fake (the fake backend's HOST:PORT) and an
# array pids (processes killed on exit).

need() { # COMMAND HOW-TO-INSTALL
    command -v "$1" >/dev/null 2>&1 || { echo "$0: $1 is missing ($2)" >&2; exit 1; }
}

wait_port() { # PORT
    for _ in $(seq 1 300); do
        (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$0: nothing listens on port $1" >&2
    exit 1
}

bench() { # PORT ARGS...: pgbench of `select 1` through 127.0.0.1:PORT, in the query
    # protocol PROFILE_PROTOCOL names (pgbench -M: simple, the default, or extended)
    local port=$1
    shift
    pgbench -n -h 127.0.0.1 -p "$port" -U u -j 2 -M "${PROFILE_PROTOCOL:-simple}" \
        -f "$out/select1.sql" "$@" db 2>&1
}

start_fakepg() { # sets fake_pid; the instant-answer backend on $fake
    echo 'select 1' > "$out/select1.sql"
    target/release/pgsluice-fakepg "$fake" > "$out/fakepg.log" 2>&1 &
    fake_pid=$!
    pids+=("$fake_pid")
    wait_port "${fake##*:}"
}

stop() { # PID [SIGNAL]
    kill "-${2:-TERM}" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

pgsluice_cmd() { # PORT WORKERS
    echo target/release/pgsluice --listen "127.0.0.1:$1" --backend "postgres://u:p@$fake/db" \
        --pool-size 20 --auth-type trust --log-level warn --workers "$2"
}

start_pgbouncer() { # [WRAPPER ARGS...] sets pid; PgBouncer on port 26433 in front of $fake
    local launch=("$@" pgbouncer)
    ini="$out/pgbouncer.ini"
    cat > "$ini" <<EOI
[databases]
db = host=${fake%:*} port=${fake##*:} dbname=db user=u
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 26433
auth_type = trust
auth_file = $PWD/$out/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 20000
logfile = $PWD/$out/pgbouncer.log
EOI
    echo '"u" "p"' > "$out/userlist.txt"
    if [ "$(id -u)" = 0 ]; then
        # 1777: PgBouncer, run as postgres, may write a profile here.
        chmod 1777 "$out" && chmod 644 "$ini" "$out/userlist.txt"
        touch "$out/pgbouncer.log" && chown postgres "$out/pgbouncer.log"
        setpriv --reuid=postgres --regid=postgres --init-groups "${launch[@]}" "$ini" > /dev/null 2>&1 &
    else
        "${launch[@]}" "$ini" > /dev/null 2>&1 &
    fi
    pid=$!
    pids+=("$pid")
    wait_port 26433
}

callgrind_count() { # PORT OUTFILE CLIENTS TXNS: prints instructions per transaction
    # Counts one process started under `valgrind --tool=callgrind
    # --callgrind-out-file=$PWD/OUTFILE`: a warm-up run, counters zeroed, the measured
    # run, a dump. Start-up and the warm-up's logins are left out of the figure.
    local port=$1 file=$2 clients=$3 txns=$4
    bench "$port" -c "$clients" -t 100 > /dev/null
    local vg
    vg=$(pgrep -f -- "--callgrind-out-file=$PWD/$file" | head -1)
    # vgdb talks to valgrind through pipes of the user it runs as (PgBouncer: postgres).
    local as=()
    if [ "$(id -u)" = 0 ] && [ "$(stat -c %U "/proc/$vg")" != root ]; then
        as=(setpriv --reuid="$(stat -c %u "/proc/$vg")" --regid="$(stat -c %g "/proc/$vg")" --clear-groups)
    fi
    "${as[@]}" callgrind_control -z "$vg" > /dev/null
    bench "$port" -c "$clients" -t "$txns" | grep -E "processed" >&2
    "${as[@]}" callgrind_control -d "$vg" > /dev/null
    sleep 1
    local dump
    dump=$(ls -t "$file".* 2>/dev/null | head -1)
    callgrind_annotate "$dump" > "$file.txt" 2>/dev/null
    local total
    total=$(awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}' "$file.txt")
    echo $((total / (clients * txns)))
}

cpu_sample() { # PID PORT CLIENTS SECONDS: prints "tps user-us/tx system-us/tx"
    bench "$2" -c "$3" -T 1 > /dev/null
    local u0 s0 u1 s1 res n
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$1/stat")
    res=$(bench "$2" -c "$3" -T "$4")
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$1/stat")
    n=$(echo "$res" | awk '/transactions actually processed/ {print $NF}' | cut -d/ -f1)
    awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v t="$(getconf CLK_TCK)" \
        -v tps="$(echo "$res" | awk '/^tps/ {print int($3)}')" \
        'BEGIN { printf "%d %.2f %.2f\n", tps, u / t * 1e6 / n, s / t * 1e6 / n }'
}

syscall_sample() { # PID PORT CLIENTS TXNS STRACE-OUT: prints "total name per-tx..."
    bench "$2" -c "$3" -t 200 > /dev/null
    local args=() t
    for t in /proc/"$1"/task/*; do args+=(-p "${t##*/}"); done
    strace -f -c -o "$5" "${args[@]}" 2> /dev/null &
    local st=$!
    sleep 1
    bench "$2" -c "$3" -t "$4" > /dev/null
    kill -INT "$st"
    wait "$st" 2>/dev/null || true
    awk -v n="$(($3 * $4))" '
        # Rows: % time, seconds, usecs/call, calls, [errors,] name.
        $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { calls[$NF] = $4; total += $4 }
        END {
            printf "%.2f", total / n
            for (c in calls) if (calls[c] / n >= 0.05) printf " %s %.2f", c, calls[c] / n
            printf "\n"
        }' "$5"
}
