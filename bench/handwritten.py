"""The default policies (DEFAULT_POLICIES.md) written by hand, as the yardstick of the compiled ones.

`decide_by_hand(facts, as_of, policy_hash)` reads the facts dict the compiled `finalize` produces
and returns the same `AccountResult` as the compiled `decide`: scores, CHI, band, "Why not 100"
reasons, tasks and segments, with the texts, thresholds and conditions copied from policies/*.yaml.
It is what a careful engineer would write without a policy engine: plain Python, no tricks.
Number formatting comes from `engine.runtime` so that only the evaluation strategy differs.

If you change a default policy, change this file too: tests/bench/test_handwritten.py checks that
both agree on every customer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.results import AccountResult, Firing, Reason
from engine.runtime import clamp, fmt, fmt_count, fmt_money, fmt_or, fmt_pct, fmt_round, round_score, task_id

PRODUCT_NAMES = {"VM": "Vulnerability Management", "PC": "Policy Compliance", "WAS": "Web App Scanning"}

# Rule params (recorded as every task's thresholds) and the `when` texts, as in rules.yaml.
RENEWAL_PARAMS = {"horizon_days": 90, "high_within_days": 30, "medium_within_days": 60, "due_within_days": 14}
OVERDUE_PARAMS = {"high_after_days": 60, "medium_after_days": 30}
HIGH_USAGE_PARAMS = {"usage_share": 0.9}
INACTIVE_SCANNERS_PARAMS = {"high_share": 0.5}
FAILED_SCANS_PARAMS = {"min_ratio": 0.10, "high_ratio": 0.5, "medium_ratio": 0.25}
SCHEDULE_PARAMS = {"high_tiers": ["T1"]}
INACTIVE_PRODUCT_PARAMS = {"high_tiers": ["T1", "T2"]}
LOW_UTILISATION_PARAMS = {"max_utilisation": 0.30}
NO_PARAMS: dict[str, Any] = {}
CHI_REVIEW_PARAMS = {"at_risk_review_tiers": ["T1"]}
OUTCOME_PARAMS = {"min_days": 2, "max_days": 29, "medium_after_days": 14}


def decide_by_hand(facts: dict[str, Any], as_of: dt.date, policy_hash: str) -> AccountResult:
    account_id = facts["account_id"]
    tier = facts["tier"]
    cadence = facts["cadence"]
    products = facts["products"]
    days_since_login = facts["days_since_login"]
    days_since_meeting = facts["days_since_meeting"]
    latest_sentiment = facts["latest_sentiment"]
    nps_mean = facts["nps_mean"]
    has_active_order = facts["has_active_order"]
    overdue_invoices = facts["overdue_invoices"]
    max_days_overdue = facts["max_days_overdue"]
    inactive_scanners = facts["inactive_scanners"]

    # ── CHI sections ────────────────────────────────────────────────────────────────────
    if days_since_login is None:
        login = 0.0
    elif days_since_login <= 7:
        login = 100
    elif days_since_login >= 60:
        login = 0
    else:
        login = 100 * (60 - days_since_login) / 53
    utilisation = clamp(facts["mean_utilisation_score"], 0, 100)
    scanning = clamp(max(0, facts["scan_failure_score"] - 20 * inactive_scanners), 0, 100)
    engagement = 0.4 * login + 0.4 * utilisation + 0.2 * scanning

    if days_since_meeting is None:
        one_to_one = 0.0
    elif days_since_meeting <= cadence:
        one_to_one = 100
    elif days_since_meeting >= 3 * cadence:
        one_to_one = 0
    else:
        one_to_one = 100 * (3 * cadence - days_since_meeting) / (2 * cadence)

    support = clamp(100 - 25 * facts["open_high_tickets"] - 10 * facts["open_other_tickets"], 0, 100)

    if latest_sentiment is None:
        sentiment = 50.0
    elif latest_sentiment == "positive":
        sentiment = 100
    elif latest_sentiment == "neutral":
        sentiment = 60
    else:
        sentiment = 20

    if nps_mean is None:
        feedback = 50.0
    elif nps_mean >= 9:
        feedback = 100
    elif nps_mean >= 7:
        feedback = 70
    else:
        feedback = 20

    commercial = 100
    if not has_active_order:
        commercial -= 50
    if max_days_overdue > 60:
        commercial -= 50
    elif overdue_invoices > 0:
        commercial -= 30
    commercial = clamp(commercial, 0, 100)

    chi = round_score(
        (50 * engagement + 10 * one_to_one + 10 * support + 10 * sentiment + 10 * feedback + 10 * commercial) / 100
    )
    band = "Happy" if chi >= 75 else "At-Risk" if chi >= 50 else "Critical"

    # ── Why not 100 ─────────────────────────────────────────────────────────────────────
    reasons = explain(facts, chi, login, utilisation, scanning, one_to_one, support, sentiment, feedback, commercial)

    # ── task rules, in the order of rules.yaml ──────────────────────────────────────────
    tasks: list[Firing] = []
    due_7 = as_of + dt.timedelta(days=7)

    days_to_renewal = facts["days_to_renewal"]
    renewal_date = facts["renewal_date"]
    if days_to_renewal is not None and renewal_date is not None and 0 <= days_to_renewal <= 90:
        if days_to_renewal <= 30:
            severity, case = "High", "days_to_renewal <= high_within_days"
        elif days_to_renewal <= 60:
            severity, case = "Medium", "days_to_renewal <= medium_within_days"
        else:
            severity, case = "Low", None
        days = fmt_count(days_to_renewal, "day", "days")
        tasks.append(
            task(
                "renewal-upcoming",
                "Commercial",
                account_id,
                "",
                severity,
                case,
                f"Renewal in {days}",
                f"Renewal in {days} ({fmt(renewal_date)}), ACV {fmt_money(facts['acv'])} {fmt(facts['currency'])}",
                min(as_of + dt.timedelta(days=14), renewal_date),
                {"days_to_renewal": days_to_renewal, "renewal_date": renewal_date},
                RENEWAL_PARAMS,
                "0 <= days_to_renewal <= horizon_days",
            )
        )

    if overdue_invoices > 0:
        if max_days_overdue > 60:
            severity, case = "High", "max_days_overdue > high_after_days"
        elif max_days_overdue > 30:
            severity, case = "Medium", "max_days_overdue > medium_after_days"
        else:
            severity, case = "Low", None
        overdue_amount = facts["overdue_amount"]
        tasks.append(
            task(
                "overdue-invoices",
                "Commercial",
                account_id,
                "",
                severity,
                case,
                fmt_count(overdue_invoices, "overdue invoice", "overdue invoices"),
                f"{fmt_count(overdue_invoices, 'invoice', 'invoices')} overdue for {fmt_money(overdue_amount)}"
                f" {fmt(facts['currency'])}; the oldest is {fmt_count(max_days_overdue, 'day', 'days')} past due",
                due_7,
                {
                    "max_days_overdue": max_days_overdue,
                    "overdue_amount": overdue_amount,
                    "overdue_invoices": overdue_invoices,
                },
                OVERDUE_PARAMS,
                "overdue_invoices > 0",
            )
        )

    for item in products:
        last_used = item["last_used_30"]
        capacity = item["capacity"]
        if last_used is None or not item["contracted"] or capacity <= 0 or last_used < 0.9 * capacity:
            continue
        if last_used >= capacity:
            severity, case = "High", "last_used_30 >= capacity"
        else:
            severity, case = "Medium", None
        product = item["product"]
        tasks.append(
            task(
                "high-license-usage",
                "Commercial",
                account_id,
                product,
                severity,
                case,
                f"{PRODUCT_NAMES.get(product, product)} at {fmt_pct(item['usage_ratio'])} of licensed capacity",
                f"{fmt(last_used)} of {fmt(capacity)} licences in use on the latest day;"
                " an upsell or true-up conversation is due",
                due_7,
                {"capacity": capacity, "contracted": item["contracted"], "last_used_30": last_used},
                HIGH_USAGE_PARAMS,
                "contracted and capacity > 0 and last_used_30 >= usage_share * capacity",
            )
        )

    if inactive_scanners > 0:
        scanners = facts["scanners"]
        if inactive_scanners / scanners >= 0.5:
            severity, case = "High", "inactive_scanners / scanners >= high_share"
        else:
            severity, case = "Medium", None
        tasks.append(
            task(
                "inactive-scanners",
                "Churn Risk",
                account_id,
                "",
                severity,
                case,
                fmt_count(inactive_scanners, "inactive scanner", "inactive scanners"),
                f"{fmt(inactive_scanners)} of {fmt(scanners)} scanner appliances not seen for more than 7 days",
                due_7,
                {"inactive_scanners": inactive_scanners, "scanners": scanners},
                INACTIVE_SCANNERS_PARAMS,
                "inactive_scanners > 0",
            )
        )

    for item in products:
        ratio = item["failure_ratio_7"]
        failed = item["failed_7"]
        if ratio is None or failed <= 0 or ratio < 0.1:
            continue
        if ratio >= 0.5:
            severity, case = "High", "failure_ratio_7 >= high_ratio"
        elif ratio >= 0.25:
            severity, case = "Medium", "failure_ratio_7 >= medium_ratio"
        else:
            severity, case = "Low", None
        product = item["product"]
        tasks.append(
            task(
                "failed-scans",
                "Churn Risk",
                account_id,
                product,
                severity,
                case,
                f"{PRODUCT_NAMES.get(product, product)} failed scans",
                f"{fmt(failed)} of {fmt(item['scans_7'])} {product} scans failed in the last 7 days ({fmt_pct(ratio)})",
                due_7,
                {"failed_7": failed, "failure_ratio_7": ratio},
                FAILED_SCANS_PARAMS,
                "failed_7 > 0 and failure_ratio_7 >= min_ratio",
            )
        )

    for schedule in facts["schedules"]:
        if not schedule["lapsed"]:
            continue
        if tier == "T1":
            severity, case = "High", "tier in high_tiers"
        else:
            severity, case = "Medium", None
        tasks.append(
            task(
                "schedule-lapsed",
                "Churn Risk",
                account_id,
                schedule["id"],
                severity,
                case,
                f"{schedule['product']} scan schedule lapsed",
                f"Schedule {schedule['id']} should run every {fmt_count(schedule['interval_days'], 'day', 'days')};"
                f" last run: {fmt_or(schedule['last_run_at'], 'never')}",
                due_7,
                {"lapsed": schedule["lapsed"], "tier": tier},
                SCHEDULE_PARAMS,
                "lapsed",
            )
        )

    for item in products:
        if not item["contracted"] or item["active_90"]:
            continue
        if tier in ("T1", "T2"):
            severity, case = "High", "tier in high_tiers"
        else:
            severity, case = "Medium", None
        product = item["product"]
        tasks.append(
            task(
                "inactive-product",
                "Product Usage",
                account_id,
                product,
                severity,
                case,
                f"{PRODUCT_NAMES.get(product, product)} unused for 90+ days",
                f"No {product} usage or scans in the last 90 days although {fmt(item['capacity'])}"
                " licences are contracted",
                due_7,
                {"active_90": item["active_90"], "contracted": item["contracted"], "tier": tier},
                INACTIVE_PRODUCT_PARAMS,
                "contracted and not active_90",
            )
        )

    for item in products:
        used = item["utilisation"]
        capacity = item["capacity"]
        if used is None or not item["contracted"] or capacity <= 0 or not item["active_90"] or used >= 0.3:
            continue
        product = item["product"]
        tasks.append(
            task(
                "low-utilisation",
                "Product Usage",
                account_id,
                product,
                "Low",
                None,
                f"{PRODUCT_NAMES.get(product, product)} utilisation at {fmt_pct(used)}",
                f"{product} averaged {fmt_pct(used)} of {fmt(capacity)} licences over the last 30 days",
                due_7,
                {
                    "active_90": item["active_90"],
                    "capacity": capacity,
                    "contracted": item["contracted"],
                    "utilisation": used,
                },
                LOW_UTILISATION_PARAMS,
                "contracted and capacity > 0 and active_90 and utilisation < max_utilisation",
            )
        )

    if days_since_meeting is None or days_since_meeting > cadence:
        if days_since_meeting is None or days_since_meeting > 2 * cadence:
            severity, case = "High", "days_since_meeting is None or days_since_meeting > 2 * cadence"
        else:
            severity, case = "Medium", None
        tasks.append(
            task(
                "meeting-follow-up-gap",
                "Product Usage",
                account_id,
                "",
                severity,
                case,
                "1:1 meeting overdue",
                f"Last 1:1 meeting: {fmt_or(facts['last_meeting_on'], 'none held yet')};"
                f" the tier's cadence is {fmt(cadence)} days",
                due_7,
                {"cadence": cadence, "days_since_meeting": days_since_meeting},
                NO_PARAMS,
                "days_since_meeting is None or days_since_meeting > cadence",
            )
        )

    if not has_active_order:
        tasks.append(
            task(
                "no-active-order",
                "Company Risk",
                account_id,
                "",
                "High",
                None,
                "No active order",
                f"No order is active on {fmt(as_of)}; confirm the renewal or the churn",
                due_7,
                {"has_active_order": has_active_order},
                NO_PARAMS,
                "not has_active_order",
            )
        )

    if band == "Critical" or (band == "At-Risk" and tier == "T1"):
        if band == "Critical":
            severity, case = "High", "band == 'Critical'"
        else:
            severity, case = "Medium", None
        tasks.append(
            task(
                "chi-status-review",
                "Company Risk",
                account_id,
                "",
                severity,
                case,
                f"CHI {chi} ({band}): review the account",
                f"Customer Health Index is {chi}, band {band}; review the reasons and agree a plan",
                due_7,
                {"band": band, "tier": tier},
                CHI_REVIEW_PARAMS,
                "band == 'Critical' or (band == 'At-Risk' and tier in at_risk_review_tiers)",
            )
        )

    for meeting in facts["meetings"]:
        days_ago = meeting["days_ago"]
        if not (meeting["held"] and meeting["outcome_missing"] and 2 <= days_ago <= 29):
            continue
        if days_ago > 14:
            severity, case = "Medium", "days_ago > medium_after_days"
        else:
            severity, case = "Low", None
        held_on = fmt(meeting["held_on"])
        tasks.append(
            task(
                "meeting-outcome-missing",
                "Company Risk",
                account_id,
                meeting["id"],
                severity,
                case,
                f"Record the outcome of the {held_on} meeting",
                f"The meeting held on {held_on} ({fmt_count(days_ago, 'day', 'days')} ago) has no recorded outcome",
                due_7,
                {"days_ago": days_ago, "held": meeting["held"], "outcome_missing": meeting["outcome_missing"]},
                OUTCOME_PARAMS,
                "held and outcome_missing and min_days <= days_ago <= max_days",
            )
        )

    # ── segments ────────────────────────────────────────────────────────────────────────
    segments = []
    region = facts["region"]
    if tier == "T1":
        segments.append("strategic")
    if tier in ("T1", "T2") and region == "EMEA":
        segments.append("enterprise-emea")
    if tier in ("T1", "T2") and region == "NA":
        segments.append("enterprise-na")
    if days_to_renewal is not None and 0 <= days_to_renewal <= 90:
        segments.append("renewal-watch")
    if overdue_invoices > 0:
        segments.append("unpaid")

    return AccountResult(
        account_id=account_id,
        chi=chi,
        band=band,
        sections={
            "engagement": engagement,
            "one_to_one": one_to_one,
            "support": support,
            "sentiment": sentiment,
            "feedback": feedback,
            "commercial": commercial,
        },
        points_lost={
            "engagement": 50 * (100 - engagement) / 100,
            "one_to_one": 10 * (100 - one_to_one) / 100,
            "support": 10 * (100 - support) / 100,
            "sentiment": 10 * (100 - sentiment) / 100,
            "feedback": 10 * (100 - feedback) / 100,
            "commercial": 10 * (100 - commercial) / 100,
        },
        coverage={
            "engagement": days_since_login is not None,
            "one_to_one": days_since_meeting is not None,
            "support": True,
            "sentiment": latest_sentiment is not None,
            "feedback": nps_mean is not None,
            "commercial": True,
        },
        reasons=reasons,
        tasks=tasks,
        segments=segments,
        errors=[],
        failed_rules=[],
        policy_hash=policy_hash,
    )


def task(
    rule: str,
    category: str,
    account_id: str,
    key: str,
    severity: str,
    case: str | None,
    title: str,
    description: str,
    due_on: dt.date,
    evidence: dict[str, Any],
    thresholds: dict[str, Any],
    condition: str,
) -> Firing:
    return Firing(
        task_id=task_id(rule, account_id, key),
        rule=rule,
        account_id=account_id,
        key=key,
        category=category,
        severity=severity,
        title=title,
        description=description,
        due_on=due_on,
        evidence=evidence,
        thresholds=thresholds,
        condition=condition,
        severity_case=case,
    )


def explain(
    facts: dict[str, Any],
    chi: int,
    login: float,
    utilisation: float,
    scanning: float,
    one_to_one: float,
    support: float,
    sentiment: float,
    feedback: float,
    commercial: float,
) -> list[Reason]:
    """The "Why not 100" reasons, worst first.

    Each shortfall (a part or section below 100) costs `share * (100 - score)` CHI points; its
    reasons share those points equally, and a shortfall no reason explains gets "<name> scored N
    of 100". Reasons are sorted by points, ties in the order chi.yaml declares them (`order`).
    """
    if chi >= 100:
        return []
    found: list[tuple[float, int, str, str | None, str, dict[str, Any]]] = []

    def shortfall(points: float, lines: list[tuple[int, str, dict[str, Any]]], section: str, part: str | None) -> None:
        for order, text, evidence in lines:
            found.append((points / len(lines), order, section, part, text, evidence))

    products = facts["products"]

    if login < 100:
        days = facts["days_since_login"]
        if days is None:
            lines = [(2, "No login recorded", {})]
        else:
            lines = [(1, f"Last login {fmt_count(days, 'day', 'days')} ago", {"days_since_login": days})]
        shortfall(0.2 * (100 - login), lines, "engagement", "login")

    if utilisation < 100:
        lines = []
        if facts["contracted_products"] == 0:
            lines.append(
                (
                    3,
                    "No contracted product to measure utilisation against",
                    {"contracted_products": facts["contracted_products"]},
                )
            )
        for item in products:
            if item["contracted"] and item["capacity"] == 0:
                evidence = {"capacity": item["capacity"], "contracted": item["contracted"], "product": item["product"]}
                lines.append((4, f"{item['product']} is contracted with zero capacity", evidence))
        for item in products:
            used = item["utilisation"]
            if item["contracted"] and used is not None and item["utilisation_score"] < 100:
                evidence = {
                    "contracted": item["contracted"],
                    "product": item["product"],
                    "utilisation": used,
                    "utilisation_score": item["utilisation_score"],
                }
                lines.append(
                    (5, f"{item['product']} utilisation at {fmt_pct(used)} of capacity (last 30 days)", evidence)
                )
        if not lines:
            lines.append((6, f"Licence utilisation scored {fmt_round(utilisation, 0)} of 100", {}))
        shortfall(0.2 * (100 - utilisation), lines, "engagement", "utilisation")

    if scanning < 100:
        lines = []
        if facts["all_scans_30"] == 0:
            lines.append((7, "No scans in the last 30 days", {"all_scans_30": facts["all_scans_30"]}))
        for item in products:
            failed = item["failed_30"]
            if failed > 0:
                scans = fmt(item["scans_30"])
                text = f"{item['product']} failed scans detected ({fmt(failed)} of {scans} in the last 30 days)"
                evidence = {"failed_30": failed, "product": item["product"], "scans_30": item["scans_30"]}
                lines.append((8, text, evidence))
        inactive = facts["inactive_scanners"]
        if inactive > 0:
            text = fmt_count(inactive, "inactive scanner appliance", "inactive scanner appliances")
            lines.append((9, f"{text} (not seen for more than 7 days)", {"inactive_scanners": inactive}))
        if not lines:
            lines.append((10, f"Scanning health scored {fmt_round(scanning, 0)} of 100", {}))
        shortfall(0.1 * (100 - scanning), lines, "engagement", "scanning")

    if one_to_one < 100:
        days = facts["days_since_meeting"]
        if days is None:
            lines = [(12, "No 1:1 meeting held yet", {})]
        else:
            cadence = facts["cadence"]
            text = f"Last 1:1 meeting {fmt_count(days, 'day', 'days')} ago (cadence {fmt(cadence)} days)"
            lines = [(11, text, {"cadence": cadence, "days_since_meeting": days})]
        shortfall(0.1 * (100 - one_to_one), lines, "one_to_one", None)

    if support < 100:
        lines = []
        high, other = facts["open_high_tickets"], facts["open_other_tickets"]
        if high > 0:
            text = fmt_count(high, "open high-priority ticket", "open high-priority tickets")
            lines.append((13, text, {"open_high_tickets": high}))
        if other > 0:
            lines.append(
                (14, fmt_count(other, "other open ticket", "other open tickets"), {"open_other_tickets": other})
            )
        if not lines:
            lines.append((15, f"Support Tickets scored {fmt_round(support, 0)} of 100", {}))
        shortfall(0.1 * (100 - support), lines, "support", None)

    if sentiment < 100:
        value = facts["latest_sentiment"]
        if value is None:
            lines = [(17, "No CSM sentiment recorded", {})]
        else:
            lines = [(16, f"CSM sentiment is {value}", {"latest_sentiment": value})]
        shortfall(0.1 * (100 - sentiment), lines, "sentiment", None)

    if feedback < 100:
        nps = facts["nps_mean"]
        if nps is None:
            lines = [(20, "No NPS response in the last 365 days", {})]
        elif nps >= 7:
            lines = [(18, f"NPS Passive: average {fmt_round(nps, 1)}", {"nps_mean": nps})]
        else:
            lines = [(19, f"NPS Detractor: average {fmt_round(nps, 1)}", {"nps_mean": nps})]
        shortfall(0.1 * (100 - feedback), lines, "feedback", None)

    if commercial < 100:
        lines = []
        if not facts["has_active_order"]:
            lines.append((21, "No active order", {"has_active_order": facts["has_active_order"]}))
        overdue, days = facts["overdue_invoices"], facts["max_days_overdue"]
        if overdue > 0:
            invoices = fmt_count(overdue, "overdue invoice", "overdue invoices")
            text = f"{invoices}, oldest {fmt_count(days, 'day', 'days')} past due"
            lines.append((22, text, {"max_days_overdue": days, "overdue_invoices": overdue}))
        if not lines:
            lines.append((23, f"Commercial Status scored {fmt_round(commercial, 0)} of 100", {}))
        shortfall(0.1 * (100 - commercial), lines, "commercial", None)

    found.sort(key=lambda reason: (-reason[0], reason[1]))
    return [
        Reason(section=section, part=part, text=text, points=points, evidence=evidence)
        for points, _, section, part, text, evidence in found
    ]
