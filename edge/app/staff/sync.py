"""Staff sync page: is everything reaching the CRM hub? Queue, last success, dead letters,
and the changes from the hub that could not be applied here (skipped, the feed went on).

Every staff page also carries a warning when the outbox nears its cap (`outbox_alarm_pct`
of `outbox_max_events`), the oldest unsent event is older than `sync_backlog_warn_s`, or the
hub refused events (see `sync_warning`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for

from edge.app.service import EdgeService
from edge.app.staff.auth import current_user, require_staff
from store_contract.wording import moment

bp = Blueprint("sync", __name__, url_prefix="/staff/sync")


def _service() -> EdgeService:
    svc: EdgeService = current_app.extensions["edge"]
    return svc


def _when(epoch: float | None, svc: EdgeService) -> str:
    if epoch is None:
        return "never"
    return moment(datetime.fromtimestamp(epoch, UTC), svc.settings.zone, svc.settings.locale)


@bp.get("/")
@require_staff("cashier")
def page() -> Any:
    svc = _service()
    state = svc.sender.state()
    letters = []
    for row in svc.sender.dead_letters():
        data = json.loads(row.pop("data"))
        row["summary"] = ", ".join(f"{k}={data[k]}" for k in ("txn", "coupon", "job")
                                   if isinstance(data, dict) and k in data)
        row["failed"] = _when(row["failed_at"], svc)
        letters.append(row)
    skips = svc.puller.recent_skips()
    for row in skips:
        row["when"] = moment(datetime.fromisoformat(row["skipped_at"]), svc.settings.zone,
                             svc.settings.locale)
    return render_template(
        "sync.html", user=current_user(), store=svc.settings, state=state, letters=letters,
        pull=svc.puller.state(), last_success=_when(svc.sender.last_success, svc),
        standalone=svc.hub.standalone, skips=skips)


@bp.post("/dead-letters/<event_id>/send")
@require_staff("manager")
def send_again(event_id: str) -> Any:
    if not (0 < len(event_id) <= 64):
        abort(404)
    if not _service().sender.send_again(event_id):
        abort(404)
    flash("The event is queued again and goes to the hub with the next batch.", "ok")
    return redirect(url_for("sync.page"))


def sync_warning() -> str | None:
    """One sentence for the top of every staff page when sync needs someone to look."""
    svc = _service()
    try:
        report = svc.sender.queue_report()
    except Exception:  # a warning banner must never break the page under it
        return None
    if report["outbox_alarm"]:
        return (f"The queue for the CRM hub holds {report['queue_depth']} events (full at "
                f"{report['outbox_max_events']}). Sales go on and are kept; check the internet "
                "connection or call IT (see the Sync page).")
    if svc.hub.standalone:
        return None
    age = report["oldest_age_s"]
    if age is not None and age > svc.settings.sync_backlog_warn_s:
        minutes = int(age // 60)
        return (f"{report['queue_depth']} events have not reached the CRM hub; the oldest "
                f"waits since {minutes} min. Sales go on; check the internet connection.")
    if report["dead_letters"]:
        return (f"The CRM hub refused {report['dead_letters']} event(s). A manager should "
                "look at them.")
    return None
