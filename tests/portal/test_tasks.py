"""Tasks as CSMs work them: the state machine, snooze and wake-up, comments, history, bulk actions,
optimistic concurrency, the dashboard's filters; and a run never touches what people wrote."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from server.db.models import AuditEvent, Task, TaskEvent, TaskState
from server.db.session import create_engine, session_factory, session_scope
from server.services.runs import RunRequest, run_in_process
from server.services.tasks import TaskStatus, wake_snoozed_tasks
from tests.conftest import POLICY_DIR
from tests.portal.conftest import AS_OF, Portal, User, db_rows, tasks_of


async def my_tasks(portal: Portal) -> tuple[User, list[Task]]:
    me = portal.portfolio.csms[0]
    return await portal.as_user(me), await tasks_of(portal.db.url, portal.portfolio.of(me))


async def transition(user: User, task_id: str, to: str, **extra: object) -> dict:
    response = await user.post_json(f"/api/tasks/{task_id}/transitions", {"to": to, **extra})
    assert response.status_code == 201, response.text
    return response.json()["task"]


async def test_the_state_machine_forward_and_reopen_with_history(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    task = tasks[0]
    assert (await csm.get(f"/api/tasks/{task.id}")).json()["task"]["allowed"] == ["started", "snoozed"]
    assert (await transition(csm, task.id, "started"))["state"] == "started"
    assert (await transition(csm, task.id, "in_progress"))["state"] == "in_progress"
    finished = await transition(csm, task.id, "finished")
    assert finished["state"] == "finished"
    assert finished["allowed"] == ["started", "not_started", "snoozed"]
    reopened = await transition(csm, task.id, "not_started")
    assert reopened["state"] == "not_started"
    assert reopened["version"] == 4
    detail = (await csm.get(f"/api/tasks/{task.id}")).json()
    people = [
        (e["actor"], e["kind"], e["from_value"], e["to_value"]) for e in detail["history"] if e["actor"] != "engine"
    ]
    assert people == [
        (csm.email, "state", "finished", "not_started"),
        (csm.email, "state", "in_progress", "finished"),
        (csm.email, "state", "started", "in_progress"),
        (csm.email, "state", "not_started", "started"),
    ]
    assert detail["history"][-1]["kind"] == "opened"  # the engine's event is kept too
    audit = await db_rows(portal.db.url, select(AuditEvent.action, AuditEvent.object_id, AuditEvent.actor))
    assert [tuple(row) for row in audit].count(("task.state_changed", task.id, csm.email)) == 4


@pytest.mark.parametrize(
    ("path", "to", "allowed"),
    [
        ((), "finished", ["started", "snoozed"]),
        ((), "in_progress", ["started", "snoozed"]),
        (("started",), "not_started", ["in_progress", "snoozed"]),
        (("started", "in_progress", "finished"), "in_progress", ["started", "not_started", "snoozed"]),
    ],
)
async def test_an_invalid_transition_is_409_naming_the_allowed_ones(
    portal: Portal, path: tuple[str, ...], to: str, allowed: list[str]
) -> None:
    csm, tasks = await my_tasks(portal)
    task = tasks[1]
    for state in path:
        await transition(csm, task.id, state)
    response = await csm.post_json(f"/api/tasks/{task.id}/transitions", {"to": to})
    assert response.status_code == 409
    body = response.json()
    assert body["allowed"] == allowed
    assert body["field"] == "to"
    assert all(TaskStatus(state).label.lower() in body["detail"] for state in allowed)  # words, not codes
    # the page answers the same through htmx: a message for the flash area, status 409
    page = await csm.htmx("POST", f"/tasks/{task.id}/state", "task-" + task.id, data={"to": to})
    assert page.status_code == 409
    assert "allowed" in page.text
    assert page.headers["HX-Retarget"] == "#flash"


async def test_unknown_states_and_bad_dates_are_400_naming_the_field(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    task = tasks[0]
    bad_state = await csm.post_json(f"/api/tasks/{task.id}/transitions", {"to": "done"})
    assert (bad_state.status_code, bad_state.json()["field"]) == (400, "to")
    no_date = await csm.post_json(f"/api/tasks/{task.id}/transitions", {"to": "snoozed"})
    assert (no_date.status_code, no_date.json()["field"]) == (400, "snooze_until")
    past = await csm.post_json(f"/api/tasks/{task.id}/transitions", {"to": "snoozed", "snooze_until": "2026-01-01"})
    assert (past.status_code, past.json()["field"]) == (400, "snooze_until")
    not_a_date = await csm.post_json(f"/api/tasks/{task.id}/transitions", {"to": "snoozed", "snooze_until": "soon"})
    assert not_a_date.status_code == 400
    assert "snooze_until" in not_a_date.text
    unknown_field = await csm.post_json(f"/api/tasks/{task.id}/transitions", {"to": "started", "state": "finished"})
    assert unknown_field.status_code == 400
    empty_comment = await csm.post_json(f"/api/tasks/{task.id}/comments", {"text": ""})
    assert empty_comment.status_code == 400
    assert "text" in empty_comment.text
    page = await csm.post(f"/tasks/{task.id}/state", {"to": "snoozed", "snooze_until": "31/12/2026"})
    assert page.status_code == 400
    assert await db_rows(portal.db.url, select(TaskState)) == []


async def test_snooze_wakes_by_itself_and_the_wake_up_is_written_by_system(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    task = tasks[0]
    await transition(csm, task.id, "started")
    before = (await csm.get("/api/tasks/counters")).json()
    until = AS_OF + dt.timedelta(days=3)
    snoozed = await transition(csm, task.id, "snoozed", snooze_until=until.isoformat())
    assert (snoozed["state"], snoozed["snoozed_until"]) == ("snoozed", until.isoformat())
    assert snoozed["allowed"] == ["started", "snoozed"]  # wake early, or change the date
    after = (await csm.get("/api/tasks/counters")).json()
    assert after["total"] == before["total"] - 1
    assert after["snoozed"] == before["snoozed"] + 1
    listed = (await csm.get("/api/tasks?state=snoozed")).json()
    assert [item["id"] for item in listed["items"]] == [task.id]

    # On the wake-up day it reads as started again, before anything is written.
    portal.set_today(until)
    awake = (await csm.get(f"/api/tasks/{task.id}")).json()["task"]
    assert (awake["state"], awake["stored_state"]) == ("started", "snoozed")
    assert (await csm.get("/api/tasks/counters")).json()["total"] == before["total"]

    # The worker's daily job writes it down, once, as a transition by "system".
    engine = create_engine(portal.db.url)
    try:
        async with session_scope(session_factory(engine)) as session:
            assert await wake_snoozed_tasks(session, until) == 1
        async with session_scope(session_factory(engine)) as session:
            assert await wake_snoozed_tasks(session, until) == 0
    finally:
        await engine.dispose()
    stored = (await db_rows(portal.db.url, select(TaskState).where(TaskState.task_id == task.id)))[0][0]
    assert (stored.state, stored.snoozed_until, stored.updated_by) == ("started", None, "system")
    history = (await csm.get(f"/api/tasks/{task.id}")).json()["history"]
    assert (history[0]["actor"], history[0]["kind"], history[0]["to_value"]) == ("system", "wake", "started")


async def test_a_change_after_an_unwritten_wake_up_records_the_wake_up_first(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    task = tasks[2]
    until = AS_OF + dt.timedelta(days=2)
    await transition(csm, task.id, "snoozed", snooze_until=until.isoformat())
    portal.set_today(until + dt.timedelta(days=1))
    started = await transition(csm, task.id, "started")
    assert started["state"] == "started"
    kinds = [(e["actor"], e["kind"]) for e in (await csm.get(f"/api/tasks/{task.id}")).json()["history"][:3]]
    assert kinds == [(csm.email, "state"), ("system", "wake"), (csm.email, "snooze")]


async def test_wake_early_and_resnooze(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    task = tasks[3]
    first = AS_OF + dt.timedelta(days=5)
    await transition(csm, task.id, "snoozed", snooze_until=first.isoformat())
    later = await transition(csm, task.id, "snoozed", snooze_until=(first + dt.timedelta(days=5)).isoformat())
    assert later["snoozed_until"] == (first + dt.timedelta(days=5)).isoformat()
    woken = await transition(csm, task.id, "not_started")
    assert (woken["state"], woken["snoozed_until"]) == ("not_started", None)


async def test_optimistic_concurrency_refuses_a_stale_change(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    task = tasks[0]
    manager = await portal.as_user("manager@test.csm")
    seen = (await csm.get(f"/api/tasks/{task.id}")).json()["task"]["version"]
    await transition(manager, task.id, "started", version=seen)
    stale = await csm.post_json(f"/api/tasks/{task.id}/transitions", {"to": "started", "version": seen})
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 1
    assert "manager@test.csm" in stale.json()["detail"]
    fresh = await transition(csm, task.id, "in_progress", version=1)
    assert (fresh["state"], fresh["version"], fresh["updated_by"]) == ("in_progress", 2, csm.email)


async def test_comments_are_kept_in_the_state_and_the_history(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    task = tasks[0]
    response = await csm.post_json(f"/api/tasks/{task.id}/comments", {"text": "Called the sponsor; renewal on track."})
    assert response.status_code == 201
    detail = response.json()
    assert detail["task"]["comment"] == "Called the sponsor; renewal on track."
    assert detail["history"][0]["kind"] == "comment"
    assert "Called the sponsor" in detail["history"][0]["text"]
    # through the page (htmx): the task's fragment comes back with the comment in it
    page = await csm.htmx("POST", f"/tasks/{task.id}/comment", f"task-{task.id}", data={"text": "Follow-up booked"})
    assert page.status_code == 200
    assert f'id="task-{task.id}"' in page.text
    assert "Follow-up booked" in page.text
    assert 'hx-swap-oob="innerHTML"' in page.text  # and a confirmation for the flash area


async def test_bulk_actions_apply_where_allowed_and_say_why_they_skipped(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    ids = [task.id for task in tasks[:3]]
    await transition(csm, ids[2], "started")
    result = await csm.post_json("/api/tasks/bulk", {"task_ids": ids, "action": "start"})
    assert result.status_code == 201
    body = result.json()
    assert body["done"] == ids[:2]
    assert [skip["task_id"] for skip in body["skipped"]] == [ids[2]]
    assert body["skipped"][0]["allowed"] == ["in_progress", "snoozed"]
    snooze = await csm.post_json(
        "/api/tasks/bulk",
        {"task_ids": ids, "action": "snooze", "snooze_until": (AS_OF + dt.timedelta(days=7)).isoformat()},
    )
    assert snooze.json()["done"] == ids
    no_date = await csm.post_json("/api/tasks/bulk", {"task_ids": ids, "action": "snooze"})
    assert (no_date.status_code, no_date.json()["field"]) == (400, "snooze_until")
    unknown = await csm.post_json("/api/tasks/bulk", {"task_ids": ids, "action": "explode"})
    assert (unknown.status_code, unknown.json()["field"]) == (400, "action")
    comment = await csm.post_json("/api/tasks/bulk", {"task_ids": ids, "action": "comment", "comment": "QBR prep"})
    assert comment.json()["done"] == ids
    states = {row[0].task_id: row[0] for row in await db_rows(portal.db.url, select(TaskState))}
    assert all(states[task_id].state == "snoozed" and states[task_id].comment == "QBR prep" for task_id in ids)


async def test_bulk_reopen_moves_only_finished_tasks(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    finished, untouched = tasks[0].id, tasks[1].id
    for state in ("started", "in_progress", "finished"):
        await transition(csm, finished, state)
    result = await csm.post_json("/api/tasks/bulk", {"task_ids": [finished, untouched], "action": "reopen"})
    body = result.json()
    assert body["done"] == [finished]
    assert [(skip["task_id"], skip["reason"]) for skip in body["skipped"]] == [
        (untouched, "Only a finished task can be reopened; this one is not started.")
    ]
    states = {row[0].task_id: row[0].state for row in await db_rows(portal.db.url, select(TaskState))}
    assert states[finished] == "started"
    assert states.get(untouched, "not_started") == "not_started"


async def test_bulk_from_the_dashboard_page(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    ids = [task.id for task in tasks[:2]]
    response = await csm.htmx(
        "POST",
        "/tasks/bulk",
        "task-results",
        data={"task_id": ids, "action": "start", "next": "/dashboard?state=started"},
    )
    assert response.status_code == 200
    assert 'id="task-results"' in response.text
    assert "2 tasks started." in response.text
    assert all(f'id="task-{task_id}"' in response.text for task_id in ids)  # the list shows started tasks now
    plain = await csm.post("/tasks/bulk", {"task_id": ids, "action": "progress", "next": "/dashboard"})
    assert (plain.status_code, plain.headers["location"]) == (303, "/dashboard")


async def test_a_task_changed_on_the_dashboard_without_javascript_comes_back_to_the_same_list(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    listing = "/dashboard?severity=High&severity=Medium"
    page = await csm.get(listing)
    task = next(task for task in tasks if f'id="task-{task.id}"' in page.text)
    article = page.text.split(f'id="task-{task.id}"', 1)[1].split("</article>", 1)[0]
    back = '<input type="hidden" name="next" value="/dashboard?severity=High&amp;severity=Medium'
    assert back in article
    version = int(article.split('name="version" value="', 1)[1].split('"', 1)[0])
    plain = await csm.post(
        f"/tasks/{task.id}/state",
        {"to": "started", "version": str(version), "context": "dashboard", "next": listing},
    )
    assert plain.status_code == 303
    assert plain.headers["location"] == "/dashboard?severity=High&severity=Medium"
    # The fragment htmx swaps in keeps the way back for the task's next form.
    fragment = await csm.htmx(
        "POST",
        f"/tasks/{task.id}/comment",
        f"task-{task.id}",
        data={"text": "called them", "version": str(version + 1), "context": "dashboard", "next": listing},
    )
    assert fragment.status_code == 200
    assert back in fragment.text
    # From the customer's page (no `next`), a change goes back to the customer's tasks.
    other = await csm.post(f"/tasks/{task.id}/state", {"to": "in_progress", "version": str(version + 2)})
    assert other.headers["location"] == f"/customers/{task.account_id}/tasks"


async def test_a_task_the_engine_resolved_cannot_change_state(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    task = tasks[0]
    engine = create_engine(portal.db.url)
    try:
        async with session_scope(session_factory(engine)) as session:
            resolved = await session.get(Task, task.id)
            assert resolved is not None
            resolved.active = False  # as a run does when the rule stops firing
    finally:
        await engine.dispose()
    response = await csm.post_json(f"/api/tasks/{task.id}/transitions", {"to": "started"})
    assert response.status_code == 409
    assert response.json()["allowed"] == []
    listed = (await csm.get("/api/tasks?resolved=1&state=not_started&per_page=200")).json()
    assert task.id in [item["id"] for item in listed["items"]]
    assert task.id not in [item["id"] for item in (await csm.get("/api/tasks?per_page=200")).json()["items"]]


async def test_a_run_never_overwrites_what_people_wrote(portal: Portal) -> None:
    csm, tasks = await my_tasks(portal)
    task = tasks[0]
    await transition(csm, task.id, "started")
    await csm.post_json(f"/api/tasks/{task.id}/comments", {"text": "mine"})
    engine = create_engine(portal.db.url)
    try:
        await run_in_process(
            session_factory(engine), RunRequest(folder=portal.portfolio.snapshot, policy_dir=POLICY_DIR, force=True)
        )
    finally:
        await engine.dispose()
    state = (await db_rows(portal.db.url, select(TaskState).where(TaskState.task_id == task.id)))[0][0]
    assert (state.state, state.comment, state.updated_by, state.version) == ("started", "mine", csm.email, 2)
    engine_events = await db_rows(
        portal.db.url, select(TaskEvent).where(TaskEvent.actor == "engine", TaskEvent.task_id == task.id)
    )
    assert len(engine_events) == 1  # opened; the forced re-run changed nothing about it


@pytest.mark.parametrize(
    ("query", "check"),
    [
        ("severity=High", lambda t: t.severity == "High"),
        ("severity=Low&severity=Medium", lambda t: t.severity in ("Low", "Medium")),
        ("category=Commercial", lambda t: t.category == "Commercial"),
        ("rule=meeting-follow-up-gap", lambda t: t.rule == "meeting-follow-up-gap"),
        ("due=overdue", lambda t: t.due_on < AS_OF + dt.timedelta(days=10)),
        ("due=today", lambda t: t.due_on == AS_OF + dt.timedelta(days=10)),
        ("due=week", lambda t: AS_OF + dt.timedelta(days=10) <= t.due_on <= AS_OF + dt.timedelta(days=13)),
    ],
)
async def test_dashboard_filters_select_exactly_the_matching_tasks(portal: Portal, query: str, check: object) -> None:
    portal.set_today(AS_OF + dt.timedelta(days=10))  # a Thursday, so that some tasks are overdue
    manager = await portal.as_user("manager@test.csm")
    every = await tasks_of(portal.db.url, [a for csm in portal.portfolio.csms for a in portal.portfolio.of(csm)])
    expected = sorted(task.id for task in every if check(task))  # type: ignore[operator]
    body = (await manager.get(f"/api/tasks?{query}&per_page=200")).json()
    assert sorted(item["id"] for item in body["items"]) == expected
    page = await manager.get(f"/dashboard?{query}&per_page=200")
    assert page.status_code == 200
    assert page.text.count('data-task="') == len(expected)


async def test_dashboard_sorts_and_counts(portal: Portal) -> None:
    manager = await portal.as_user("manager@test.csm")
    body = (await manager.get("/api/tasks?per_page=200")).json()
    order = {"High": 0, "Medium": 1, "Low": 2}
    ranks = [order[item["severity"]] for item in body["items"]]
    assert ranks == sorted(ranks)
    counters = body["counters"]
    assert counters["total"] == counters["high"] + counters["medium"] + counters["low"] == body["total"]
    by_due = (await manager.get("/api/tasks?sort=due&dir=desc&per_page=200")).json()["items"]
    assert [item["due_on"] for item in by_due] == sorted((item["due_on"] for item in by_due), reverse=True)
    bad = await manager.get("/api/tasks?severity=Urgent")
    assert (bad.status_code, bad.json()["field"]) == (400, "severity")
    page = await manager.get("/dashboard")
    assert f">{counters['high']}</span>" in page.text
