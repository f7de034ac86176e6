# Sourced by every scripts/bench-*: the one way a benchmark gets its kdev.
#
#   . scripts/lib/bench.sh
#   kdev=$(bench_kdev)
#
# Builds kdev and prints the binary's path. Figures come from the release
# build (the default). KDEV_BENCH_PROFILE=debug takes the debug build
# instead: scripts/bench-quick's smoke run of every benchmark, which proves
# the script still runs from start to last line without a second full
# compile; its figures mean nothing.

bench_kdev() {
  case ${KDEV_BENCH_PROFILE:-release} in
    release)
      cargo build --locked --release --bins --quiet >&2
      echo "$PWD/target/release/kdev" ;;
    debug)
      cargo build --locked --bins --quiet >&2
      echo "$PWD/target/debug/kdev" ;;
    *)
      echo "KDEV_BENCH_PROFILE must be release or debug, not ${KDEV_BENCH_PROFILE}" >&2
      return 2 ;;
  esac
}
