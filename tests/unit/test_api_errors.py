"""How engine errors become HTTP answers: 503s keep their message, other 5xx do not."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from coriolis.api import errors
from coriolis.db.session import DatabaseBusy
from coriolis.exceptions import CoriolisError


def _client(exc: Exception) -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


def test_a_busy_database_is_a_503_that_says_so() -> None:
    answer = _client(DatabaseBusy("the database stayed busy for 30 s")).get("/boom")
    assert answer.status_code == 503
    assert answer.json()["error"]["message"] == "the database stayed busy for 30 s"


def test_other_server_errors_are_a_generic_500() -> None:
    class Internal(CoriolisError):
        code = 500

    answer = _client(Internal("password=hunter2 in a stack")).get("/boom")
    assert answer.status_code == 500
    assert "hunter2" not in answer.text
