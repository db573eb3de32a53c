"""The official Segment SDKs, unmodified and pointed at the collector by host only, deliver every
event they send to the raw topic exactly once and exactly as sent.

See tests/sdk/README.md for how to run these.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import pytest
from segment.analytics import Client as SegmentClient
from segment.analytics import request as segment_request

if TYPE_CHECKING:  # the fixtures' types, for readers and editors
    from conftest import Collector, Record

RECEIVED_AT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def assert_stored_by_collector(rec: Record, collector: Collector, started: datetime) -> None:
    """What the collector adds or removes on every message, whatever the SDK."""
    assert rec.headers.get("cdp-source-id") == collector.source_id, rec
    assert "writeKey" not in rec.value, rec
    received_at = rec.value.get("receivedAt")
    assert isinstance(received_at, str) and RECEIVED_AT.match(received_at), rec
    assert rec.headers.get("cdp-received-at") == received_at, rec
    when = datetime.fromisoformat(received_at.replace("Z", "+00:00"))
    assert started - timedelta(seconds=1) <= when <= utcnow() + timedelta(seconds=1), rec


def exactly_one(records: dict[str, list[Record]], message_id: str) -> Record:
    found = records[message_id]
    assert len(found) == 1, f"messageId {message_id}: expected 1 record in the raw topic, found {len(found)}: {found}"
    return found[0]


# ------------------------------------------------------------------------------------ analytics-node

def test_analytics_node_delivers_each_call_type_once_to_the_raw_topic_as_sent(collector, node, run_id):
    started = utcnow()
    proc = node.run("node-sdk.mjs", collector.http_url, collector.write_key, run_id, timeout=90)
    assert proc.returncode == 0, f"node-sdk.mjs failed:\n{proc.stderr}\n{proc.stdout}"
    sent = json.loads(proc.stdout)
    assert [c["type"] for c in sent] == ["track", "identify", "page", "screen", "group", "alias"]
    ids = [c["params"]["messageId"] for c in sent]
    assert len(set(ids)) == 6 and all(run_id in i for i in ids), ids

    stored = collector.raw_records(set(ids))

    for call in sent:
        kind, params = call["type"], call["params"]
        rec = exactly_one(stored, params["messageId"])
        v = rec.value
        assert v["type"] == kind, rec
        assert v["userId"] == params["userId"], rec
        for field in ("event", "traits", "name", "category", "groupId", "previousId"):
            if field in params:
                assert v.get(field) == params[field], f"{field} of {kind}: {rec}"
        if "properties" in params:
            expected = dict(params["properties"])
            if kind == "page" and "category" in params:
                expected["category"] = params["category"]  # analytics-node copies it into properties
            assert v.get("properties") == expected, rec
        assert v["context"]["library"]["name"] == "@segment/analytics-node", rec
        assert_stored_by_collector(rec, collector, started)

    assert collector.rejected_mentioning(run_id) == []


# ---------------------------------------------------------------------------------- analytics-python

def test_analytics_python_gzip_batch_with_null_anonymous_id_lands_once_in_the_raw_topic_as_sent(collector, run_id):
    user = f"user-py-{run_id}"
    # (method, keyword arguments, fields the stored message must have)
    calls = [
        ("track", dict(user_id=user, event="Order Completed",
                       properties={"order_id": f"order-{run_id}", "revenue": 19.99, "tags": ["a", "b"]}),
         {"type": "track", "userId": user, "event": "Order Completed",
          "properties": {"order_id": f"order-{run_id}", "revenue": 19.99, "tags": ["a", "b"]}}),
        ("identify", dict(user_id=user, traits={"email": f"{run_id}@example.com", "age": 41}),
         {"type": "identify", "userId": user, "traits": {"email": f"{run_id}@example.com", "age": 41}}),
        ("page", dict(user_id=user, category="Docs", name="Pricing", properties={"path": "/pricing"}),
         {"type": "page", "userId": user, "category": "Docs", "name": "Pricing",
          "properties": {"path": "/pricing"}}),
        ("screen", dict(user_id=user, name="Settings", properties={"tab": "privacy"}),
         {"type": "screen", "userId": user, "name": "Settings", "properties": {"tab": "privacy"}}),
        ("group", dict(user_id=user, group_id=f"group-{run_id}", traits={"name": "Initech"}),
         {"type": "group", "userId": user, "groupId": f"group-{run_id}", "traits": {"name": "Initech"}}),
        ("alias", dict(previous_id=f"anon-py-{run_id}", user_id=user),
         {"type": "alias", "userId": user, "previousId": f"anon-py-{run_id}"}),
    ]

    errors: list[str] = []
    exchanges: list[tuple[str, str, str | None, int, str]] = []

    def record_exchange(resp, *args, **kwargs):
        req = resp.request
        exchanges.append((req.method, req.url, req.headers.get("Content-Encoding"), resp.status_code, resp.text))

    hooks = segment_request._session.hooks["response"]
    hooks.append(record_exchange)
    started = utcnow()
    try:
        client = SegmentClient(collector.write_key, host=collector.http_url, gzip=True, max_retries=1,
                               upload_size=100, on_error=lambda e, batch: errors.append(repr(e)))
        ids = []
        for method, kwargs, _ in calls:
            message_id = f"py-{run_id}-{method}"
            ok, msg = getattr(client, method)(message_id=message_id, **kwargs)
            assert ok, msg
            if method != "alias":
                assert "anonymousId" in msg and msg["anonymousId"] is None, msg  # what the SDK sends
            ids.append(message_id)
        client.flush()
        client.join()
    finally:
        hooks.remove(record_exchange)

    assert errors == []
    assert exchanges, "analytics-python made no request"
    for method, url, encoding, status, body in exchanges:
        assert (method, url, encoding) == ("POST", f"{collector.http_url}/v1/batch", "gzip")
        assert status == 200 and json.loads(body) == {"success": True}, body

    stored = collector.raw_records(set(ids))
    for (method, _, expected), message_id in zip(calls, ids):
        rec = exactly_one(stored, message_id)
        for field, value in expected.items():
            assert rec.value.get(field) == value, f"{field} of {method}: {rec}"
        assert rec.value.get("anonymousId") is None, rec
        assert rec.value["context"]["library"] == {"name": "analytics-python", "version": "2.4.0"}, rec
        assert_stored_by_collector(rec, collector, started)

    assert collector.rejected_mentioning(run_id) == []


# ------------------------------------------------------------------------------------ analytics-next

@pytest.mark.parametrize("delivery", ["standard", "batching"])
def test_analytics_next_in_chromium_loads_settings_from_the_collector_and_each_event_lands_once(
        collector, node, page_server, run_id, delivery):
    chromium = os.environ.get("CDP_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).is_file():
        pytest.fail(f"{chromium} is missing (apt-get install chromium, or set CDP_CHROMIUM)")
    version = node.package_version("@segment/analytics-next")
    params = {"writeKey": collector.write_key, "cdnURL": collector.http_url, "run": run_id}
    if delivery == "batching":
        params["delivery"] = "batching"
    query = urlencode(params)
    page_url = f"{page_server}/page/index.html?{query}"
    started = utcnow()

    proc = node.run("browser.mjs", page_url, timeout=120)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    assert proc.returncode == 0, f"browser.mjs failed:\n{proc.stderr}\n{json.dumps(out, indent=1)[:20000]}"
    assert out["foreign"] == [], "requests left this machine (e.g. to segment.com / segment.io)"
    assert out["pageErrors"] == []
    page_origin = out["pageOrigin"]
    assert page_origin == page_server and urlsplit(page_origin).port != urlsplit(collector.http_url).port

    # The settings document came from the collector, cross-origin, once.
    settings_url = f"{collector.http_url}/v1/projects/{collector.write_key}/settings"
    settings = [r for r in out["requests"] if r["url"] == settings_url]
    assert [(r["method"], r["status"], r["allowOrigin"]) for r in settings] == [("GET", 200, page_origin)]

    sent = out["result"]["sent"]
    assert [e["type"] for e in sent] == ["page", "identify", "track", "group"]
    assert out["result"]["failedDelivery"] == []
    ids = [e["messageId"] for e in sent]
    assert len(set(ids)) == 4, ids

    # The events went to the collector (the settings' apiHost), cross-origin, each posted once.
    posts = [r for r in out["requests"]
             if r["method"] == "POST" and r["url"] != f"{collector.http_url}/v1/m"]
    if delivery == "standard":  # one POST per call, on the library's short paths
        assert [(r["url"], r["status"], r["allowOrigin"]) for r in posts] == [
            (f"{collector.http_url}/v1/{p}", 200, page_origin) for p in ("p", "i", "t", "g")
        ]
        assert [r["body"]["messageId"] for r in posts] == ids
    else:  # queued and posted together to /v1/b
        assert posts and {(r["url"], r["status"], r["allowOrigin"]) for r in posts} == {
            (f"{collector.http_url}/v1/b", 200, page_origin)}
        assert [e["messageId"] for r in posts for e in r["body"]["batch"]] == ids
    anonymous_id = sent[0]["anonymousId"]
    assert anonymous_id and all(e["anonymousId"] == anonymous_id for e in sent)

    expected_page = {
        "path": "/page/index.html",
        "referrer": "",
        "search": f"?{query}",
        "title": "CDP SDK test page",
        "url": page_url,
    }
    user = f"user-{run_id}"
    expected = {
        "page": {"userId": None, "properties": expected_page},
        "identify": {"userId": user, "traits": {"email": f"{run_id}@example.com"}},
        "track": {"userId": user, "event": "Order Completed", "properties": {"order_id": f"order-{run_id}"}},
        "group": {"userId": user, "groupId": f"g-{run_id}", "traits": {}},
    }

    stored = collector.raw_records(set(ids))
    for event in sent:
        rec = exactly_one(stored, event["messageId"])
        v = rec.value
        assert v["type"] == event["type"], rec
        assert v["anonymousId"] == anonymous_id, rec
        for field, value in expected[event["type"]].items():
            assert v.get(field) == value, f"{field} of {event['type']}: {rec}"
        assert v["context"]["page"] == expected_page, rec
        assert v["context"]["library"] == {"name": "analytics.js", "version": f"next-{version}"}, rec
        assert v["context"]["userAgent"] == event["context"]["userAgent"], rec
        assert_stored_by_collector(rec, collector, started)

    assert collector.rejected_mentioning(run_id) == []
