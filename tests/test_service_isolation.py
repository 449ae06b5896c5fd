"""One caller's bad request never fails another's: the hostile mix of issue 15 against a real
`bentoml serve`, and the batcher's own guarantee in process."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import httpx
import numpy as np
import pandas as pd
import pytest

from autopdm import store
from autopdm.serving.batching import MicroBatcher

from .service_fleet import fleet_copy, headers, home_paths, post, serving

pytestmark = pytest.mark.slow
NORMAL = 200
BAD_LOOPS = 4


def test_batcher_fails_only_the_request_that_raises():
    calls = []

    def fn(items):
        calls.append(len(items))
        if "poison" in items:
            raise ValueError("poison")
        return [f"ok:{x}" for x in items]

    async def main():
        b = MicroBatcher(fn)
        items = [f"r{i}" for i in range(9)] + ["poison"]
        return await asyncio.gather(*(b.submit(x) for x in items), return_exceptions=True)

    res = asyncio.run(main())
    assert calls[0] == 10  # the ten requests were batched together
    assert res[:9] == [f"ok:r{i}" for i in range(9)]
    assert isinstance(res[9], ValueError)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = fleet_copy(tmp_path_factory, "isolation")
    feats = store.read_table("features", home_paths(home))
    feats["date"] = pd.to_datetime(feats["date"])
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    with serving(home, log, AUTOPDM_ASSESS_PAST_MAX_VEHICLES="5") as url:
        yield url, feats


def hostile_mix(url: str, path: str, normal: list[dict], bad: list, check) -> tuple[Counter, Counter]:
    """`normal` bodies from 16 clients while BAD_LOOPS clients send `bad` bodies in a loop until the
    normal ones are done. Returns status counts of normal requests ("wrong" for a 200 whose answer
    fails `check(body, answer)`) and of bad ones."""
    done = threading.Event()
    ok, hostile = Counter(), Counter()
    lock = threading.Lock()

    def send(client, body):
        try:
            if isinstance(body, tuple):  # (raw bytes, content type)
                return client.post(path, content=body[0], headers={"Content-Type": body[1]})
            return client.post(path, json=body)
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def normal_client(bodies):
        with httpx.Client(base_url=url, headers=headers(), timeout=60) as c:
            for b in bodies:
                r = send(c, b)
                s = r if isinstance(r, str) else r.status_code
                if s == 200 and not check(b, r.json()):
                    s = "wrong"
                with lock:
                    ok[s] += 1

    def bad_client(k):
        with httpx.Client(base_url=url, headers=headers(), timeout=60) as c:
            i = k
            while not done.is_set():
                r = send(c, bad[i % len(bad)])
                s = r if isinstance(r, str) else r.status_code
                i += 1
                with lock:
                    hostile[s] += 1

    bads = [threading.Thread(target=bad_client, args=(k,)) for k in range(BAD_LOOPS)]
    goods = [threading.Thread(target=normal_client, args=(normal[k::16],)) for k in range(16)]
    for t in bads + goods:
        t.start()
    for t in goods:
        t.join(300)
    done.set()
    for t in bads:
        t.join(60)
    return ok, hostile


def test_hostile_assess_mix_fails_no_normal_request(server):
    url, feats = server
    vins = list(feats["vehicle_id"].drop_duplicates())
    last = feats["date"].max()
    rng = np.random.default_rng(1)
    # latest days and past days (scored on demand in batches, where bad requests used to fail whole groups)
    normal = [{"vehicle_ids": [vins[i % len(vins)]]} if i % 2 else
              {"vehicle_ids": [vins[i % len(vins)], vins[(i * 7) % len(vins)]],
               "as_of": str((last - pd.Timedelta(days=int(rng.integers(1, 150)))).date())} for i in range(NORMAL)]
    bad = [{"vehicle_ids": [vins[0]], "as_of": "0001-01-01"}, {"vehicle_ids": [vins[1]], "as_of": "9999-12-31"},
           {"vehicle_ids": vins[:20], "as_of": str((last - pd.Timedelta(days=3)).date())},  # over the past-day cap
           {"vehicle_ids": []}, {"vehicle_ids": [vins[2]], "as_of": "2026-02-30"},
           (b'{"vehicle_ids": ["' + vins[3].encode() + b'"]}', "multipart/form-data; boundary=x"),
           (b"--x\r\nContent-Disposition: form-data; name=vehicle_ids\r\n\r\nA\r\n--x--\r\n", "multipart/form-data; boundary=x"),
           (b'{"vehicle_ids": [', "application/json")]

    def check(body, ans):
        got = [v["vehicle_id"] for v in ans["vehicles"]] + ans["unknown"] + ans["no_data"]
        return sorted(got) == sorted(set(body["vehicle_ids"])) and ans["as_of"] == body.get("as_of", ans["as_of"])

    ok, hostile = hostile_mix(url, "/assess", normal, bad, check)
    print(f"/assess hostile mix: normal {dict(ok)}, hostile {dict(hostile)}")
    assert ok == Counter({200: NORMAL}), ok
    assert sum(hostile.values()) >= 2 * len(bad) and all(isinstance(s, int) and 400 <= s < 500 for s in hostile), hostile


def test_hostile_predict_mix_fails_no_normal_request(server):
    url, feats = server
    order = post(url, "/model_info", {}).json()["feature_order"]
    rows = json.loads(feats.sample(400, random_state=0)[order].to_json(orient="records"))
    normal = [{"rows": rows[(i * 20) % 380:(i * 20) % 380 + 20]} for i in range(NORMAL)]
    f = order[0]
    bad = [{"rows": [{}]}, {"rows": rows[:5] + [{}]}, {"rows": [{f: "high"}]}, {"rows": [[1.0, 2.0]]},
           (b'{"rows": [{"' + f.encode() + b'": 1e999}]}', "application/json"), {"rows": []}, {"rows": [[]]},
           (b'rows=1', "application/x-www-form-urlencoded")]
    alone = {i: post(url, "/predict", normal[i]).json() for i in range(0, NORMAL, 50)}

    def check(body, ans):  # the same risks as the request gets alone, one per row
        i = normal.index(body)
        return len(ans) == len(body["rows"]) and (i not in alone or ans == alone[i])

    ok, hostile = hostile_mix(url, "/predict", normal, bad, check)
    print(f"/predict hostile mix: normal {dict(ok)}, hostile {dict(hostile)}")
    assert ok == Counter({200: NORMAL}), ok
    assert sum(hostile.values()) >= 2 * len(bad) and all(isinstance(s, int) and 400 <= s < 500 for s in hostile), hostile
