# Helpers shared by scripts/bench and its section scripts (sourced, not run).

# A process's CPU time (user + system) in clock ticks; TICKS per second.
cpu_ticks() { awk '{print $14 + $15}' "/proc/${1:-$WEICHE_PID}/stat"; }
TICKS=$(getconf CLK_TCK)

# Wait (up to 5 s) until something accepts connections on 127.0.0.1:PORT, for each PORT.
wait_ports() {
  local port
  for port in "$@"; do
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.05
    done
  done
}
