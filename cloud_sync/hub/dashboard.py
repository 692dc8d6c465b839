"""The regional dashboard of the CRM hub: sign-in, per-store KPIs, sync health, conflicts,
charts, the live refresh, `/dashboard.json` and the CSV export.

Views are thin: they decide *which stores* the signed-in manager may see (their region, or
every region for a manager without one) and hand exactly those to `kpis`; nothing of
another region reaches a template, the JSON or the CSV.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_timedelta
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    has_app_context,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFProtect

from cloud_sync.hub import charts, kpis
from cloud_sync.hub.managers import Manager, authenticate, get_manager
from store_contract.web import local_path, page_headers
from store_contract.wording import (
    calendar_day,
    date_pattern,
    input_date,
    local_time,
    money,
    parse_input_date,
    to_major,
)

bp = Blueprint("hub_dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/assets")
csrf = CSRFProtect()
LOCALE = "en_IE"   # outside a request; in one, the hub's HUB_LOCALE (the words are English)
REFRESH_S = 10
OPEN_ENDPOINTS = {"hub_dashboard.login", "hub_dashboard.static"}
# The live refresh and scripts get a status, not the login page's HTML.
DATA_ENDPOINTS = {"hub_dashboard.live", "hub_dashboard.data", "hub_dashboard.export"}
# Same origin only; the SVG charts are inline markup, so nothing needs 'unsafe-inline'.

def current_manager() -> Manager | None:
    """The manager of this request's session, re-read so that a removed account, or one
    whose password was set since the session was made (its epoch), stops at once."""
    if "hub_manager" not in g:
        name = session.get("hub_manager")
        manager = get_manager(current_app.extensions["hub"].db, name) if name else None
        if manager is not None and session.get("hub_epoch") != manager.session_epoch:
            manager = None
        g.hub_manager = manager
    found: Manager | None = g.hub_manager
    return found


@bp.before_request
def _require_login() -> Any:
    if request.endpoint in OPEN_ENDPOINTS or current_manager() is not None:
        return None
    if request.endpoint in DATA_ENDPOINTS:
        return jsonify(error={"code": "unauthorized", "message": "Please sign in."}), 401
    return redirect(url_for("hub_dashboard.login", next=request.full_path.rstrip("?")))


@bp.after_request
def _headers(response: Response) -> Response:
    return page_headers(response, cache=request.endpoint == "hub_dashboard.static")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The sign-in form (CSRF-protected like every form of the hub)."""
    error = None
    if request.method == "POST":
        manager = authenticate(current_app.extensions["hub"].db,
                               request.form.get("username", "").strip(),
                               request.form.get("password", ""),
                               client=request.remote_addr or "unknown")
        if manager is not None:
            session.clear()
            session["hub_manager"] = manager.username
            session["hub_epoch"] = manager.session_epoch
            session.permanent = True
            return redirect(local_path(request.args.get("next"),
                                       url_for("hub_dashboard.home")))
        error = "Wrong username or password (after 5 wrong tries the account waits 5 minutes)."
    return render_template("login.html", error=error, manager=None,
                           username=request.form.get("username", ""))


@bp.post("/logout")
def logout() -> Any:
    """Sign out (a POST with the CSRF token, so no other site can sign a manager out)."""
    session.clear()
    return redirect(url_for("hub_dashboard.login"))


@dataclass(frozen=True)
class Scope:
    """What a request looks at: the stores the manager may see, narrowed by the query."""

    manager: Manager
    region: str | None          # the region shown; None = every region (managers without one)
    store: kpis.StoreRef | None  # one store's page
    stores: list[kpis.StoreRef]
    regions: list[str]          # the region selector's choices (managers without a region)

    def args(self) -> dict[str, str]:
        return {"region": self.region} if self.manager.all_regions and self.region else {}


def _scope(store_id: str | None = None) -> Scope:
    """The stores of this request; another region's store or region is a 404, not a 403, so
    a manager cannot even learn that it exists."""
    db = current_app.extensions["hub"].db
    manager = current_manager()
    assert manager is not None  # _require_login ran
    if store_id is not None:
        store = kpis.get_store(db, store_id)
        if store is None or not manager.sees(store.region):
            abort(404)
        return Scope(manager, store.region, store, [store], [])
    wanted = request.args.get("region", "").strip() or None
    if manager.region is not None:
        if wanted not in (None, manager.region):
            abort(404)
        return Scope(manager, manager.region, None, kpis.stores_in(db, manager.region), [])
    choices = kpis.regions(db)
    if wanted is not None and wanted not in choices:
        abort(404)
    return Scope(manager, wanted, None, kpis.stores_in(db, wanted), choices)


def _typed_dates() -> dict[str, str] | None:
    """`from`/`to` as typed in the locale's date fields (24.11.2026) turned into the ISO
    dates the URL keeps (2026-11-24); None when they already are ISO (or unreadable: the
    period says so)."""
    locale = current_app.extensions["hub"].settings.locale
    iso = {}
    for name in ("from", "to"):
        text = request.args.get(name, "").strip()
        if not text:
            continue
        try:
            date.fromisoformat(text)
            continue
        except ValueError:
            pass
        try:
            iso[name] = parse_input_date(text, locale).isoformat()
        except ValueError:
            continue
    return iso or None


def _canonical() -> Any:
    """A redirect to the same page with ISO dates in the URL, when the form sent the
    locale's (bookmarks and links keep one format whatever the hub's locale)."""
    iso = _typed_dates()
    if iso is None or request.endpoint is None:
        return None
    args: dict[str, Any] = {**request.args.to_dict(), **iso, **(request.view_args or {})}
    return redirect(url_for(request.endpoint, **args))


def _period() -> tuple[kpis.Period, str | None]:
    """The period asked for, or the last 7 days with a sentence saying what was wrong."""
    hub = current_app.extensions["hub"]
    zone, now = hub.settings.zone, time.time()
    key = request.args.get("period", kpis.DEFAULT_PERIOD)
    dates = {"from": request.args.get("from", ""), "to": request.args.get("to", ""),
             **(_typed_dates() or {})}
    try:
        return kpis.period_of(key, zone, now, dates["from"], dates["to"]), None
    except kpis.PeriodError as exc:
        said = str(exc)
        if said.startswith("Dates must look like"):  # in the locale's words, not ISO's
            said = f"Dates must look like {input_date(date(2026, 11, 24), hub.settings.locale)}."
        return kpis.period_of(kpis.DEFAULT_PERIOD, zone, now), \
            f"{said} Showing the last 7 days instead."


def _period_args(period: kpis.Period) -> dict[str, str]:
    if period.key == "custom":
        return {"period": "custom", "from": period.first.isoformat(),
                "to": period.last.isoformat()}
    return {"period": period.key}


def _locale() -> str:
    """The hub's locale (HUB_LOCALE) for dates, times and money on the dashboard."""
    hub = current_app.extensions.get("hub") if has_app_context() else None
    return hub.settings.locale if hub is not None else LOCALE


def format_money(amounts: dict[str, int]) -> str:
    """Minor units per currency for people: "€12.98", several currencies joined by " · "."""
    if not amounts:
        return "–"
    return " · ".join(money(minor, cur, _locale()) for cur, minor in sorted(amounts.items()))


def format_pct(value: float | None) -> str:
    """A share in %, one decimal ("66.7 %"); "–" when there is nothing to divide."""
    return "–" if value is None else f"{value:.1f} %"


def format_ago(ts: float | None, now: float) -> str:
    """How long ago, for people: "4 minutes ago", "never"."""
    if ts is None:
        return "never"
    if now - ts < 5:
        return "just now"
    return str(format_timedelta(timedelta(seconds=ts - now), add_direction=True,
                                locale=LOCALE))  # words, and the dashboard's are English


def format_age(seconds: float | None) -> str:
    """A duration such as the age of a store's oldest unsent event: "3 hours"."""
    if seconds is None:
        return "–"
    if seconds < 1:
        return "0 seconds"
    return str(format_timedelta(timedelta(seconds=seconds), locale=LOCALE))


def _context(scope: Scope, period: kpis.Period, period_error: str | None) -> dict[str, Any]:
    """Everything the page and its live part show, from `kpis` only."""
    hub = current_app.extensions["hub"]
    db, zone, now = hub.db, hub.settings.zone, time.time()
    ids = [s.id for s in scope.stores]
    rows = kpis.store_kpis(db, scope.stores, period.start_ts, period.end_ts)
    series = kpis.daily_series(db, ids, period, zone)
    names = {s.id: s.name for s in scope.stores}
    locale = hub.settings.locale
    per = "hour" if series.hours else "day"
    labels = [local_time(h, zone, locale, "clock") for h in series.hours] if series.hours \
        else [calendar_day(d, locale, "day_month") for d in series.days]
    begun = series.begun(now)  # hours or days still to come get no point, not a zero
    redeemed = [sum(day) for day in zip(*series.redemptions.values(), strict=True)][:begun] \
        if series.redemptions else [0] * begun
    where = scope.store.name if scope.store else \
        (f"region {scope.region}" if scope.region else "all regions")
    return {
        "scope": scope, "manager": scope.manager, "period": period,
        "period_error": period_error, "periods": kpis.PERIODS, "now": now,
        "query": {**_period_args(period), **scope.args()},
        "rows": rows, "total": kpis.totals(rows, "Region total" if scope.region else "Total"),
        "health": kpis.sync_health(db, scope.stores, now, hub.settings.stale_after_s),
        "open_conflicts": kpis.open_conflicts(db, ids),
        "resolved_conflicts": kpis.resolved_conflicts(db, ids),
        "suspects": kpis.suspect_redemptions(db, ids),
        "store_names": names, "refresh_s": REFRESH_S, "suspect_reasons": SUSPECT_REASONS,
        "sales_chart": charts.line_chart(
            "chart-sales", f"Completed sales per {per}, {where}", labels,
            [(names[s], values[:begun]) for s, values in series.transactions.items()],
            "sales"),
        "redemptions_chart": charts.bar_chart(
            "chart-redemptions", f"Coupon redemptions per {per}, {where}", labels, redeemed,
            "redemptions"),
        "chart_per": per,
        "updated": local_time(datetime.fromtimestamp(now, UTC), zone, locale),
        "first_day": calendar_day(period.first, locale),
        "last_day": calendar_day(period.last, locale),
        "date_pattern": date_pattern(locale),
        "date_example": input_date(date(2026, 11, 24), locale),
        "from_text": input_date(period.first, locale),
        "to_text": input_date(period.last, locale),
        "zone": hub.settings.tz,
    }


# What a manager reads for each reason a redemption was not believed (docs/hub.md).
SUSPECT_REASONS = {
    "no_token": "sent without the coupon it used",
    "unknown_key": "coupon signed with a key the hub does not trust",
    "signature": "coupon altered after it was signed",
    "malformed": "coupon unreadable",
    "typ": "not a coupon",
    "alg": "coupon signed the wrong way",
    "too_long": "coupon unreadable",
    "token_mismatch": "coupon is not the one reported",
    "key_scope": "a store's key signed what only the chain may",
    "claims": "coupon's terms unreadable",
}


@bp.get("/")
def home() -> Any:
    """The dashboard of the manager's region (or the chosen region, or all of them)."""
    scope = _scope()
    return _canonical() or render_template("dashboard.html", **_context(scope, *_period()))


@bp.get("/stores/<store_id>")
def store_page(store_id: str) -> Any:
    """One store's dashboard; another region's store is a 404."""
    scope = _scope(store_id)
    return _canonical() or render_template("dashboard.html", **_context(scope, *_period()))


@bp.get("/stores/<store_id>/redemptions/<redemption_id>")
def sale_page(store_id: str, redemption_id: str) -> Any:
    """The sale a redemption was part of, as the store reported it (linked from a
    conflict); another region's store, or a redemption not of this store, is a 404."""
    scope = _scope(store_id)
    hub = current_app.extensions["hub"]
    sale = kpis.sale_of_redemption(hub.db, store_id, redemption_id)
    if sale is None:
        abort(404)
    return render_template("sale.html", scope=scope, manager=scope.manager, sale=sale,
                           redemption_id=redemption_id, zone=hub.settings.zone,
                           moment_of=_moment_of(hub.settings.zone, hub.settings.locale))


def _moment_of(zone: ZoneInfo, locale: str) -> Callable[[float | None], str]:
    """A Unix time for people, in the hub's zone and locale ("30 Nov, 11:00")."""
    def fmt(ts: float | None) -> str:
        return "–" if ts is None else local_time(ts, zone, locale)
    return fmt


@bp.get("/dashboard/live")
def live() -> Any:
    """The part of the page that refreshes itself (the page's script fetches it)."""
    scope = _scope(request.args.get("store") or None)
    return render_template("dashboard_live.html", **_context(scope, *_period()))


@bp.get("/dashboard.json")
def data() -> Any:
    """The same figures for scripts: money as integer minor units per currency."""
    scope = _scope(request.args.get("store") or None)
    period, error = _period()
    ctx = _context(scope, period, error)
    return jsonify(
        period={"key": period.key, "from": period.first.isoformat(),
                "to": period.last.isoformat(), "zone": ctx["zone"], "warning": error},
        region=scope.region, generated_ts=ctx["now"],
        stores=[kpis.as_dict(r) for r in ctx["rows"]], total=kpis.as_dict(ctx["total"]),
        sync=[{"store_id": h.store_id, "last_contact_ts": h.last_contact_ts,
               "last_batch_ts": h.last_batch_ts, "queue_depth": h.queue_depth,
               "oldest_age_s": h.oldest_age_s, "dead_letters": h.dead_letters,
               "reported_ts": h.reported_ts, "stopped_syncing": h.stale}
              for h in ctx["health"]],
        conflicts=[{"coupon_id": c.coupon_id, "campaign_id": c.campaign_id,
                    "uses": c.uses, "max_uses": c.max_uses, "stores": c.stores,
                    "other_region_stores": c.other_stores, "detected_ts": c.detected_ts,
                    "resolved_ts": c.resolved_ts, "campaign_name": c.campaign_name,
                    "customer_id": c.customer_id, "discount_minor": c.discount,
                    "uses_here": [{"redemption": u.redemption_id, "store_id": u.store_id,
                                   "device": u.device, "txn": u.txn,
                                   "redeemed_ts": u.redeemed_ts,
                                   "discount_minor": u.discount_minor,
                                   "currency": u.currency, "reversed": u.reversed}
                                  for u in c.used]}
                   for c in ctx["open_conflicts"] + ctx["resolved_conflicts"]],
        suspect_redemptions=[{"redemption": r.redemption_id, "store_id": r.store_id,
                              "coupon_id": r.coupon_id, "campaign_id": r.campaign_id,
                              "reason": r.reason, "redeemed_at": r.redeemed_at,
                              "received_ts": r.received_ts} for r in ctx["suspects"]])


def safe_cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text starting = + - @ (or tab/CR) gets a quote.

    Numbers pass unchanged, so a spreadsheet still sums them.
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_rows(rows: list[kpis.StoreKpis], total: kpis.StoreKpis, period: kpis.Period
             ) -> Iterable[list[object]]:
    """The KPI table as CSV rows (header first); money in major units, a column per currency."""
    currencies = kpis.money_columns(rows)
    header: list[object] = [
        "store_id", "store", "region", "from", "to", "transactions", "identified_customers",
        "identified_pct", "voids", *[f"sales_{c}" for c in currencies], "redemptions",
        *[f"discount_{c}" for c in currencies], "kiosk_sessions", "receipts_printed"]
    yield header
    for row in [*rows, total]:
        yield ([row.store_id, row.name, row.region, period.first.isoformat(),
                period.last.isoformat(), row.transactions, row.identified,
                "" if row.identified_pct is None else row.identified_pct, row.voids]
               + [to_major(row.sales.get(c, 0), c) for c in currencies]
               + [row.redemptions] + [to_major(row.discount.get(c, 0), c) for c in currencies]
               + [row.kiosk_sessions, row.receipts])


@bp.get("/dashboard.csv")
def export() -> Any:
    """The per-store KPI table of the chosen period as a CSV download."""
    scope = _scope(request.args.get("store") or None)
    period, _ = _period()
    db = current_app.extensions["hub"].db
    rows = kpis.store_kpis(db, scope.stores, period.start_ts, period.end_ts)
    out = io.StringIO()
    writer = csv.writer(out)
    for line in csv_rows(rows, kpis.totals(rows), period):
        writer.writerow([safe_cell(v) for v in line])
    what = scope.store.id if scope.store else (scope.region or "all-regions")
    name = f"dashboard-{what}-{period.first.isoformat()}-{period.last.isoformat()}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def init_app(app: Flask) -> None:
    """Register the dashboard and CSRF protection (the app exempts the store API)."""
    csrf.init_app(app)
    app.register_blueprint(bp)
    app.jinja_env.filters.update(money=format_money, pct=format_pct)
    app.jinja_env.globals.update(ago=format_ago, age=format_age)
