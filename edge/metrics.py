"""Prometheus metrics of one edge, in a registry of its own (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric the edge exports; one instance per running edge."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("edge_requests", "Device requests answered, by method and outcome",
                                ["method", "outcome"], registry=r)
        self.request_seconds = Histogram(
            "edge_request_seconds", "Time from a request reaching the dispatcher to its reply",
            ["method"], registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.repeats = Counter("edge_request_repeats", "Requests answered from the reply cache",
                               registry=r)
        self.events = Counter("edge_device_events", "Device events handled, by type and outcome",
                              ["type", "outcome"], registry=r)
        self.dropped = Counter("edge_bus_dropped", "Bus messages dropped before a handler, by "
                               "reason", ["reason"], registry=r)
        self.status_mutes = Counter("edge_bus_status_mutes", "Times the edge stopped "
                                    "listening to a device's status for a while because it "
                                    "sent too many, by kind", ["kind"], registry=r)
        self.bus_connected = Gauge("edge_bus_connected", "1 while the edge is connected to the "
                                   "broker", registry=r)
        self.bus_connects = Counter("edge_bus_connects", "Successful connections to the broker",
                                    registry=r)
        self.devices_online = Gauge("edge_devices_online", "Devices whose presence is online, by "
                                    "kind", ["kind"], registry=r)
        self.sync_changes_skipped = Counter(
            "edge_sync_changes_skipped", "Changes (or single keys of a key set) from the hub "
            "that could not be applied here and were skipped, by kind", ["kind"], registry=r)
        self.outbox_depth = Gauge("edge_outbox_depth", "Events waiting to be sent to the hub",
                                  registry=r)
        self.outbox_max_events = Gauge("edge_outbox_max_events", "The outbox's cap "
                                       "(outbox_max_events)", registry=r)
        self.outbox_alarm_events = Gauge("edge_outbox_alarm_events", "Outbox depth at which "
                                         "the alarm is raised (outbox_alarm_pct of the cap)",
                                         registry=r)
        self.outbox_alarm = Gauge("edge_outbox_alarm", "1 while the outbox is at or over its "
                                  "alarm depth", registry=r)
        self.outbox_dropped = Counter("edge_outbox_dropped", "Events a full outbox dropped, by "
                                      "type (only device.status and kiosk.session)", ["type"],
                                      registry=r)
        self.outbox_oldest_age = Gauge("edge_outbox_oldest_age_seconds",
                                       "Age of the oldest event waiting for the hub", registry=r)
        self.sync_events = Counter("edge_sync_events", "Outbox events that left the queue, by "
                                   "outcome (delivered, dead_letter)", ["outcome"], registry=r)
        self.sync_failures = Counter("edge_sync_failures", "Sends to the hub that failed and "
                                     "will be tried again", registry=r)
        self.sync_last_success = Gauge("edge_sync_last_success_timestamp_seconds",
                                       "When the hub last took a batch (Unix time)", registry=r)
        self.sync_dead_letters = Gauge("edge_sync_dead_letters", "Events the hub refused, kept "
                                       "for staff", registry=r)
        self.sync_changes = Counter("edge_sync_changes", "Changes from the hub applied here, by "
                                    "kind", ["kind"], registry=r)
        self.sync_pull_last_success = Gauge("edge_sync_pull_last_success_timestamp_seconds",
                                            "When the change feed was last read to its end "
                                            "(Unix time)", registry=r)
        self.hub_lookups = Counter("edge_hub_lookups", "Online look-ups of shoppers this store "
                                   "does not hold, by outcome (found, not_found, timeout, busy, "
                                   "offline, throttled, error)", ["outcome"], registry=r)
        self.hub_lookup_seconds = Histogram(
            "edge_hub_lookup_seconds", "Time the till waited for an online look-up",
            registry=r, buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 2.0, 5.0))
        self.scans = Counter("edge_scans", "Scans from scanners (evt/scan), by outcome: routed "
                             "(sent to the assigned lane or kiosk), unassigned (nowhere to "
                             "go), refused (a bad scan, or not from a scanner)", ["outcome"],
                             registry=r)
        self.live_scans = Counter("edge_live_scans", "Scans pushed to staff checkout pages, by "
                                  "outcome (sent, dropped: a page's queue was full)",
                                  ["outcome"], registry=r)
        self.live_scan_pages = Gauge("edge_live_scan_pages", "Staff checkout pages listening "
                                     "for scans now", registry=r)
