"""Store edge: the service on the store box that joins lanes, printers, scanners and kiosks.

The package is the edge's core: the domain (checkout, coupons, customers, receipts, the
print spool, devices) and the store it keeps. `edge.app` wires it into the running service
with the HTTP API, the staff pages and the `edge` command; only it may use the lane and
printer clients (`pos_bridge`) and the hub link (`cloud_sync`). docs/architecture.md
draws the layers.
"""
