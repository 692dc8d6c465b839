"""The store's contracts, shared by everything that talks to the edge.

This package imports nothing else from the repository. The edge, the hub, the POS lane
client (`pos_bridge`) and the kiosk meet here: the MQTT envelope and topics, errors, ids
and times, signed tokens, the record parsers, the outbox events, and the wording of money
and times. The hub, `pos_bridge` and `kiosk_ui` may use the edge only through this package
(docs/architecture.md).
"""
