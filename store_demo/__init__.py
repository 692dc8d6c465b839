"""The demo store (`edge demo`, scripts/demo.sh): a broker, an edge, a hub with history,
simulated lanes, printers and phones on one machine. Outside the service's packages: nothing
in `edge`, `cloud_sync` or `pos_bridge` imports it, only the `edge demo` command."""
