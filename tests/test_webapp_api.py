"""``lineargan-edit serve``'s JSON API on the embedded DCGAN and dlib: the whole usage
(sample, annotate, train, edit, SCS), clear errors for bad requests, queued jobs that never
corrupt each other, and nothing written outside the workspace."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from flows.webapp.server import Studio, create_app
from lineargan.masks import load_mask_png
from tasks.editing import load_generator

CLASSES = ("background", "skin", "eyebrows", "eyes", "nose", "lips", "mouth")


def wait(client: TestClient, job: dict, timeout: float = 120) -> dict:
    end = time.monotonic() + timeout
    while (view := client.get(f"/api/jobs/{job['id']}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < end, view
        time.sleep(0.05)
    return view


@pytest.fixture(scope="module")
def app(tmp_path_factory, segmenter):
    """A workspace inside an otherwise empty folder (to see that nothing lands beside it),
    with two annotated samples and a 2-shot LSE trained through the API."""
    root = tmp_path_factory.mktemp("web")
    studio = Studio(load_generator("dcgan-digiface", None, "cpu"), segmenter, root / "ws")
    client = TestClient(create_app(studio))
    for sample in client.post("/api/samples", json={"n": 2}).json():
        labels = client.get("/api/mask", params={"path": sample["path"], "source": "file"})
        assert labels.status_code == 200
        added = client.post(
            "/api/annotations", json={"path": sample["path"], "labels": labels.json()["labels"]}
        )
        assert added.status_code == 200, added.json()
    trained = wait(client, client.post("/api/train", json={"iterations": 60}).json())
    assert trained["state"] == "done", trained
    # what this training wrote, before another test (in any order) trains again
    studio.first_lse = json.loads((studio.ws.root / "lse" / "config.json").read_text())
    yield client, studio, root
    studio.jobs.close()


def test_training_through_the_api_writes_a_train_fewshot_lse(app):
    client, studio, _ = app
    meta = studio.first_lse["metadata"]
    assert meta["n_shot"] == 2 and meta["iterations"] == 60
    info = client.get("/api/info").json()
    assert info["lse"]["n_shot"] == 2 and [c["name"] for c in info["classes"]] == list(CLASSES)
    # the live view predicted the held-out sample and scored it against the reference
    job = client.get("/api/jobs/1").json()
    assert len(job["preview"]["labels"]) == 64 * 64 and 0 <= job["preview"]["iou"] <= 1
    assert job["done"] == job["total"] == 60 and job["loss"] > 0


def test_edit_and_scs_write_what_lineargan_edit_reads(app, tmp_path):
    client, studio, _ = app
    sample = client.post("/api/samples", json={"folder": "samples", "n": 1}).json()[0]
    before = client.get("/api/mask", params={"path": sample["path"], "source": "lse"}).json()
    labels = np.array(before["labels"]).reshape(64, 64)
    labels[16:48, 16:48] = CLASSES.index("skin")
    edit = client.post(
        "/api/edit", json={"path": sample["path"], "labels": labels.ravel().tolist(), "steps": 5}
    ).json()
    done = wait(client, edit)
    assert done["state"] == "done" and done["total"] == 5, done
    edited = done["result"]["edited"]
    # the downloads are the files `lineargan-edit` writes: the CLI edits the edited sample again
    image = client.get("/api/file", params={"path": edited["image"], "download": True})
    assert image.headers["content-type"] == "image/png"
    assert "attachment" in image.headers["content-disposition"]
    target = studio.ws.path(done["result"]["target"])
    assert (load_mask_png(target, CLASSES, 64) == labels).all()
    out = tmp_path / "cli-edit"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.edit",
            "edit",
            "--sample",
            str(studio.ws.path(edited["latent"])),
        ]
        + ["--mask", str(target), "--lse", str(studio.ws.root / "lse"), "--out", str(out)]
        + ["--steps", "1", "--device", "cpu", "--segmenter", "null"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    scs = wait(
        client,
        client.post(
            "/api/scs", json={"labels": labels.ravel().tolist(), "n": 2, "steps": 2}
        ).json(),
    )
    assert scs["state"] == "done" and len(scs["result"]["samples"]) == 2


@pytest.mark.parametrize(
    ("method", "url", "body", "needle"),
    [
        (
            "post",
            "/api/annotations",
            {"path": "annotate/seed0-000", "labels": [0] * 10},
            "10 pixels",
        ),
        (
            "post",
            "/api/annotations",
            {"path": "annotate/seed0-000", "labels": [7] * 4096},
            "unknown class index 7",
        ),
        (
            "post",
            "/api/annotations",
            {"path": "../outside", "labels": [0] * 4096},
            "outside the workspace",
        ),
        ("post", "/api/annotations", {"path": "/etc/passwd", "labels": [0] * 4096}, "not relative"),
        ("post", "/api/annotations", {"path": "annotate/nope", "labels": [0] * 4096}, "no sample"),
        (
            "post",
            "/api/annotations",
            {"path": "annotate/seed0-000", "labels": "x"},
            "invalid request",
        ),
        ("post", "/api/edit", {"path": "annotate/seed0-000", "labels": [0] * 4095}, "4095 pixels"),
        ("post", "/api/scs", {"labels": [-1] * 4096}, "unknown class index -1"),
        ("get", "/api/file?path=../../etc/passwd", None, "outside the workspace"),
        ("get", "/api/mask?path=annotate/seed0-000&source=nope", None, "invalid request"),
        (
            "post",
            "/api/import",
            {"name": "x", "sidecar": {"latent": "abc", "class_names": []}},
            "another generator",
        ),
        ("post", "/api/samples", {"folder": "lse", "n": 1}, "invalid request"),
        ("get", "/api/jobs/999", None, "no job 999"),
    ],
)
def test_bad_requests_are_clear_json_errors(app, method, url, body, needle):
    client, _, _ = app
    response = getattr(client, method)(url, **({} if body is None else {"json": body}))
    assert 400 <= response.status_code < 500
    error = response.json()
    assert needle in error["error"] and error["fix"], error


def test_a_malformed_latent_is_refused(app):
    client, studio, _ = app
    sidecar = json.loads(studio.ws.path("annotate/seed0-000.json").read_text())
    for latent, needle in (
        ("abc", "not a list of numbers"),
        ([1.0] * 3, "shape"),
        ([1e30] * 100, "no latent"),
    ):
        response = client.post(
            "/api/import", json={"name": "bad", "sidecar": {**sidecar, "latent": latent}}
        )
        assert response.status_code == 400 and needle in response.json()["error"], response.json()
    assert not list((studio.ws.root / "imported").glob("bad*"))
    good = client.post("/api/import", json={"name": "again", "sidecar": sidecar})
    assert good.status_code == 200 and studio.ws.path(good.json()["image"]).is_file()


def test_a_second_job_waits_its_turn_and_a_full_queue_is_busy(app):
    """Jobs run one at a time: an edit asked for during a training run waits in the queue
    and ends with the edit it asked for; past the queue's size the answer is 409 busy."""
    client, studio, _ = app
    sample = client.post("/api/samples", json={"folder": "samples", "n": 1}).json()[0]
    labels = client.get("/api/mask", params={"path": sample["path"], "source": "lse"}).json()[
        "labels"
    ]
    train = client.post("/api/train", json={"iterations": 400, "reports": 50}).json()
    edit = client.post(
        "/api/edit", json={"path": sample["path"], "labels": labels, "steps": 3}
    ).json()
    scs = client.post("/api/scs", json={"labels": labels, "n": 1, "steps": 1}).json()
    assert edit["state"] == "queued" and scs["state"] == "queued"
    busy = client.post("/api/scs", json={"labels": labels, "n": 1, "steps": 1})
    assert busy.status_code == 409 and "busy" in busy.json()["error"]
    # annotating goes on while the LSE trains (no lock held beyond the generator's pass)
    assert client.get("/api/info").status_code == 200
    views = [wait(client, job) for job in (train, edit, scs)]
    assert [v["state"] for v in views] == ["done"] * 3, views
    meta = json.loads((studio.ws.root / "lse" / "config.json").read_text())["metadata"]
    assert meta["iterations"] == 400  # the edit ran on the LSE of the finished training
    assert views[1]["result"]["edited"]["path"].startswith("edits/")


def test_a_cancelled_job_stops_and_writes_no_result(app):
    client, studio, _ = app
    sample = client.post("/api/samples", json={"folder": "samples", "n": 1}).json()[0]
    labels = client.get("/api/mask", params={"path": sample["path"], "source": "lse"}).json()[
        "labels"
    ]
    job = client.post(
        "/api/edit", json={"path": sample["path"], "labels": labels, "steps": 2000}
    ).json()
    while client.get(f"/api/jobs/{job['id']}").json()["done"] == 0:
        time.sleep(0.02)
    client.post(f"/api/jobs/{job['id']}/cancel")
    view = wait(client, job)
    assert view["state"] == "cancelled" and view["done"] < 2000
    assert not list((studio.ws.root / "edits").glob(f"{sample['name']}-e*.json"))


def test_nothing_is_written_outside_the_workspace(app):
    _, _, root = app
    assert sorted(p.name for p in root.iterdir()) == ["ws"]


def test_serve_refuses_a_port_in_use_in_one_line(tmp_path, capsys):
    """``lineargan-edit serve`` binds 127.0.0.1 by default; a port already taken there is a
    one-line error (exit 2), before anything is served."""
    import socket

    from flows.edit import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            main(
                ["serve", "--port", str(port), "--workspace", str(tmp_path / "ws")]
                + ["--device", "cpu"]
            )
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "Fix:" in err


def test_an_annotation_can_be_taken_out_of_the_training_set(app):
    client, studio, _ = app
    sample = client.post("/api/samples", json={"n": 1}).json()[0]
    labels = client.get("/api/mask", params={"path": sample["path"], "source": "reference"})
    added = client.post(
        "/api/annotations", json={"path": sample["path"], "labels": labels.json()["labels"]}
    ).json()
    n = added["training_set"]
    refused = client.delete("/api/annotations", params={"path": sample["path"]})
    assert refused.status_code == 400 and "not in the training set" in refused.json()["error"]
    removed = client.delete("/api/annotations", params={"path": added["added"]["path"]})
    assert removed.status_code == 200 and removed.json()["training_set"] == n - 1
    assert not list((studio.ws.root / "train").glob(f"{sample['name']}.*"))
