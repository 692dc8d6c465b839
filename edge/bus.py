"""The edge's MQTT bus: presence, request/response and events over the store broker.

paho's network thread only parses the topic and queues the message; handlers run on a
small pool of worker threads. Messages of one device run one after another in arrival
order (a device is never handled on two threads at once), while different devices run
in parallel, and a device that floods the edge only fills its own backlog. A device's
status waits at most once (a newer one replaces it), and its events are rate limited.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.datadir import DataDir
from edge.devices import LastSeen, parse_status, record_status
from edge.dispatch import Caller, Dispatcher, Reply
from edge.metrics import Metrics
from edge.settings import Settings
from edge.store import Store
from store_contract.errors import BadRequest
from store_contract.mqtt import is_refused, make_client, parse_mqtt_url, publish_offline, stop_loop
from store_contract.protocol import (
    DEVICE_KINDS,
    MAX_ENVELOPE_BYTES,
    Topic,
    command_topic,
    decode_json,
    edge_status_topic,
    encode,
    new_envelope,
    now_rfc3339,
    parse_topic,
    reply_topic,
    status_topic,
)

log = logging.getLogger(__name__)
SOFTWARE = "store-edge/0.1"
RECEIVE_MAXIMUM = 1000


class SerialExecutor:
    """Runs tasks on a thread pool, one at a time per key and in submission order.

    Keys with work wait in a `SimpleQueue` (a C-level blocking queue: the cheapest hand-off
    between threads CPython has); a key is in that queue at most once, so two threads never
    run tasks of the same key.
    """

    _STOP = ""

    def __init__(self, workers: int, backlog: int, name: str = "bus") -> None:
        self.backlog = backlog
        self._lock = threading.Lock()
        self._pending: dict[str, deque[Callable[[], None]]] = {}
        self._ready: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, key: str, task: Callable[[], None]) -> bool:
        """Queue `task` behind the key's earlier tasks; False if the key's backlog is full."""
        with self._lock:
            tasks = self._pending.get(key)
            if tasks is None:
                self._pending[key] = deque((task,))
            elif len(tasks) >= self.backlog:
                return False
            else:
                tasks.append(task)
                return True
        self._ready.put(key)
        return True

    def _work(self) -> None:
        while True:
            key = self._ready.get()
            if key is self._STOP:
                return
            # Run a few of this key's tasks, then let other keys have the thread.
            for _ in range(16):
                with self._lock:
                    tasks = self._pending[key]
                    if not tasks:
                        del self._pending[key]
                        break
                    task = tasks.popleft()
                try:
                    task()
                except Exception:
                    log.exception("bus task for %s failed", key)
            else:
                self._ready.put(key)

    def depth(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._pending.values())

    def stop(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._ready.put(self._STOP)
        for t in self._threads:
            t.join(timeout)


class EventRate:
    """A token bucket per device for its events (`evt/*`): `rate` a second on average and
    `burst` at once. Only paho's network thread calls it, so it needs no lock."""

    def __init__(self, rate: float, burst: int, log_every_s: float = 60.0) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.log_every_s = log_every_s
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill]
        self._dropped: dict[str, list[float]] = {}  # key -> [dropped since log, logged at]

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
        bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def note_dropped(self, key: str, now: float | None = None) -> int:
        """Count a dropped event; how many to log now (0: not yet, one line per interval)."""
        now = time.monotonic() if now is None else now
        seen = self._dropped.setdefault(key, [0.0, float("-inf")])
        seen[0] += 1
        if now - seen[1] < self.log_every_s:
            return 0
        count = int(seen[0])
        seen[0], seen[1] = 0.0, now
        return count


class Bus:
    """The edge's connection to the store broker."""

    def __init__(self, settings: Settings, datadir: DataDir, store: Store, dispatcher: Dispatcher,
                 metrics: Metrics, last_seen: LastSeen | None = None) -> None:
        self.settings = settings
        # Every message of a device moves its "last seen" on, in memory (devices.LastSeen).
        self.last_seen = last_seen or LastSeen()
        self.store = store
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.store_id = settings.store_id
        self.connected = threading.Event()
        self.refused: str | None = None
        address = parse_mqtt_url(settings.mqtt_url)
        if address.username is None:
            creds = datadir.edge_mqtt_credentials()
            username, password = creds["username"], creds["password"]
        else:
            username, password = address.username, address.password or ""
        self.login = (username, password)
        # The broker makes the username the client id (use_username_as_clientid): this id
        # is only what the edge asks for. Nothing else may log in as the edge.
        self.client = make_client(f"edge-{settings.store_id}", address, username=username,
                                  password=password)
        self.address = address
        self.client.will_set(edge_status_topic(self.store_id),
                             encode({"state": "offline", "ts": now_rfc3339()}), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.executor = SerialExecutor(settings.bus_workers, settings.bus_device_backlog)
        self.event_rate = EventRate(settings.device_event_rate, settings.device_event_burst)
        # The latest status of each device whose status task has not run yet: a newer one
        # replaces it, so a flapping device costs one write per turn, not one per message.
        self._statuses: dict[str, bytes] = {}
        self._statuses_lock = threading.Lock()
        # Counted on paho's network thread: label children looked up once (labels() costs
        # more than inc()).
        self._superseded = metrics.dropped.labels(reason="status_superseded")
        self._status_window: dict[str, list[float]] = {}  # key -> [window start, count]
        self._muted: dict[str, float] = {}  # key -> muted until (monotonic)
        self._status_subs: set[str] = set()  # per-device status topics while one is muted
        self._subs_lock = threading.Lock()
        self._over_rate = metrics.dropped.labels(reason="event_rate")
        self.on_status: Callable[[str, str, dict[str, Any]], None] | None = None
        self._started = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background; paho reconnects with capped backoff after a drop."""
        # A persistent session: QoS 1 events sent while the edge restarts wait at the broker.
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        # Let the broker send many messages before our acks come back: with its default of
        # 20, a device flooding the edge makes the lanes' requests queue behind it at the
        # broker while acks make the round trip (bench/bus_rtt.py, load (d)).
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(self.address.host, self.address.port,
                                  keepalive=self.settings.mqtt_keepalive, clean_start=False,
                                  properties=props)
        self.client.loop_start()
        self._started = True

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self) -> None:
        """Say goodbye (retained offline), disconnect and stop the workers."""
        if not self._started:
            return
        self._started = False
        if self.connected.is_set():
            publish_offline(self.client, edge_status_topic(self.store_id))
        self.client.disconnect()
        stop_loop(self.client)
        self.executor.stop()
        self.connected.clear()
        self.metrics.bus_connected.set(0)

    # ------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                    _props: Any) -> None:
        if reason_code.is_failure:
            if is_refused(reason_code):
                self.refused = str(reason_code)
                log.error("the broker refused the edge's login (%s): check EDGE_MQTT_URL or "
                          "the credentials in the data dir; not retrying", reason_code)
                client.disconnect()
            else:
                log.warning("broker connection failed: %s; retrying", reason_code)
            return
        self.refused = None
        base = f"store/{self.store_id}/+/+"
        # Statuses at QoS 0: they are retained, so the latest comes again on every (re)connect,
        # and a flapping device costs the network thread no acknowledgement per message.
        with self._subs_lock:  # a new session: every status again, nobody muted
            self._muted.clear()
            left = sorted(self._status_subs)
            self._status_subs.clear()
        if left:  # the broker kept them with the session
            client.unsubscribe(left)
        client.subscribe([(f"{base}/req/+", 1), (f"{base}/evt/+", 1), (f"{base}/status", 0)])
        client.publish(edge_status_topic(self.store_id),
                       encode({"state": "online", "ts": now_rfc3339(), "sw": SOFTWARE}),
                       qos=1, retain=True)
        self.connected.set()
        self.metrics.bus_connected.set(1)
        self.metrics.bus_connects.inc()
        log.info("connected to the broker at %s:%s", self.address.host, self.address.port)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                       reason_code: Any, _props: Any) -> None:
        self.connected.clear()
        self.metrics.bus_connected.set(0)
        if self._started:
            log.warning("lost the broker connection (%s); reconnecting", reason_code)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic = parse_topic(msg.topic)
        if topic is None or topic.store != self.store_id or topic.channel in ("res", "cmd"):
            self.metrics.dropped.labels(reason="topic").inc()
            return
        key = topic.device_key
        self.last_seen.note(topic.kind, topic.device)
        if topic.channel == "status":
            self._status_arrived(topic, msg.payload)
            return
        if topic.channel == "evt" and not self.event_rate.allow(key):
            # Only events: a lane's request is always answered (or refused in its reply).
            self._over_rate.inc()
            count = self.event_rate.note_dropped(key)
            if count:
                log.warning("dropped %d event(s) from %s over its rate limit (%d/s, burst %d)",
                            count, key, self.settings.device_event_rate,
                            self.settings.device_event_burst)
            return
        if topic.channel == "evt" and topic.name in self.dispatcher.inline:
            self._handle(topic, msg)  # never raises: handle_event logs and counts
            return
        if not self.executor.submit(key, lambda: self._handle(topic, msg)):
            self.metrics.dropped.labels(reason="backlog").inc()
            log.warning("dropped a message from %s: its backlog is full", key)

    def _status_arrived(self, topic: Topic, payload: bytes) -> None:
        key = topic.device_key
        now = time.monotonic()
        window = self._status_window.get(key)
        if window is None or now - window[0] >= 1.0:
            window = self._status_window[key] = [now, 0.0]
        window[1] += 1
        # More than this in a second floods the edge's one connection to the broker, where
        # the lanes' requests would queue behind it: stop listening for a while.
        if window[1] > self.settings.status_flood_per_s and key not in self._muted:
            self._mute(key, now)
        with self._statuses_lock:
            waiting = key in self._statuses
            self._statuses[key] = payload
        if waiting:
            self._superseded.inc()
            return
        if not self.executor.submit(key, lambda: self._latest_status(topic)):
            with self._statuses_lock:
                self._statuses.pop(key, None)
            self.metrics.dropped.labels(reason="backlog").inc()
            log.warning("dropped a status from %s: its backlog is full", key)

    # ------------------------------------------------------------ handlers (worker threads)

    def _handle(self, topic: Topic, msg: mqtt.MQTTMessage) -> None:
        caller = Caller(topic.kind, topic.device)
        if topic.channel == "req":
            reply = self.dispatcher.handle_request(caller, topic.name, msg.payload)
            self._send_reply(topic, msg, reply)
        elif topic.channel == "evt":
            self.dispatcher.handle_event(caller, topic.name, msg.payload)

    def _send_reply(self, topic: Topic, msg: mqtt.MQTTMessage, reply: Reply) -> None:
        own = reply_topic(self.store_id, topic.kind, topic.device)
        target = own
        props = None
        req_props = getattr(msg, "properties", None)
        response_topic = getattr(req_props, "ResponseTopic", None) if req_props else None
        if response_topic:
            # Only the device's own reply topics: the edge must not publish for it elsewhere.
            if response_topic == own or response_topic.startswith(own + "/"):
                target = response_topic
            else:
                log.warning("%s asked for replies on %r, outside its own topics; using %s",
                            topic.device_key, response_topic, own)
        correlation = getattr(req_props, "CorrelationData", None) if req_props else None
        if correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        self.client.publish(target, reply.body, qos=1, properties=props)

    # ------------------------------------------------------------ muting a flooding status

    def _mute(self, key: str, now: float) -> None:
        """Stop listening to one device's status for `status_mute_s`, then read its latest
        (retained): subscribe to every other enrolled device's status instead of the
        wildcard."""
        mute_s = self.settings.status_mute_s
        with self._subs_lock:
            self._muted[key] = now + mute_s
        self.metrics.status_mutes.labels(kind=key.split("/")[0]).inc()
        log.warning("%s sent more than %d statuses in a second: not listening to its status "
                    "for %d s, then reading its latest", key, self.settings.status_flood_per_s,
                    mute_s)
        self._resubscribe()
        timer = threading.Timer(mute_s, self._unmute_due)
        timer.daemon = True
        timer.start()

    def _unmute_due(self) -> None:
        now = time.monotonic()
        with self._subs_lock:
            for key in [k for k, until in self._muted.items() if until <= now]:
                del self._muted[key]
                self._status_window.pop(key, None)
        self._resubscribe()

    def _resubscribe(self) -> None:
        """The status subscriptions for who is muted now (new ones first, so no status falls
        between two subscriptions; a retained status comes with each new one)."""
        wildcard = f"store/{self.store_id}/+/+/status"
        with self._subs_lock:
            muted = set(self._muted)
            had = set(self._status_subs) or {wildcard}
            if muted:
                rows = self.store.query("SELECT kind, id FROM devices")
                want = {status_topic(self.store_id, r["kind"], r["id"]) for r in rows
                        if f"{r['kind']}/{r['id']}" not in muted}
            else:
                want = {wildcard}
            self._status_subs = set() if want == {wildcard} else want
            new, gone = sorted(want - had), sorted(had - want)
            if new:
                self.client.subscribe([(t, 0) for t in new])
            if gone:
                self.client.unsubscribe(gone)

    def _latest_status(self, topic: Topic) -> None:
        with self._statuses_lock:
            payload = self._statuses.pop(topic.device_key, None)
        if payload is not None:
            self._presence(topic, payload)

    def _presence(self, topic: Topic, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        try:
            status = parse_status(decode_json(payload))
        except BadRequest as exc:
            self.metrics.dropped.labels(reason="status").inc()
            log.warning("ignored a malformed status from %s: %s", topic.device_key, exc)
            return
        if not record_status(self.store, topic.kind, topic.device, status,
                             interval_s=self.settings.status_event_interval_s):
            log.warning("status from %s, which is not enrolled here", topic.device_key)
            return
        self.refresh_presence_gauge()
        if self.on_status is not None:
            self.on_status(topic.kind, topic.device, status)

    def command(self, kind: str, device: str, name: str,
                data: dict[str, Any]) -> mqtt.MQTTMessageInfo:
        """Send a command envelope to a device (`cmd/{name}`, QoS 1); paho's handle on it
        (`wait_for_publish` returns once the broker has taken it)."""
        body = new_envelope(name, data).to_json()
        if len(body) > MAX_ENVELOPE_BYTES:
            raise ValueError(f"a {name} command of {len(body)} bytes is over the "
                             f"{MAX_ENVELOPE_BYTES}-byte envelope limit")
        return self.client.publish(command_topic(self.store_id, kind, device, name), body,
                                   qos=1)

    def refresh_presence_gauge(self) -> None:
        counts = {row["kind"]: row["n"] for row in self.store.query(
            "SELECT kind, COUNT(*) AS n FROM devices WHERE state = 'online' GROUP BY kind")}
        for kind in DEVICE_KINDS:
            self.metrics.devices_online.labels(kind=kind).set(counts.get(kind, 0))
