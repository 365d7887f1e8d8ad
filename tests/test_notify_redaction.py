"""The Telegram bot token never reaches the log, in any spelling a server may echo back.

A real loopback HTTP server (tests.helpers.LoopbackJSONServer) answers the real Notifier's requests with
an error whose description quotes the request path, where the token appears URL-encoded. The token used
here has characters that URL quoting changes (``:``, ``/``, ``+``, ``=``), so its raw, quoted and fully
quoted forms all differ.
"""

from __future__ import annotations

import logging
import re
import urllib.parse

import pytest

from parallel_dqn.telemetry.notify import Notifier
from tests.helpers import LoopbackJSONServer

TOKEN = "123456:AB/C+D=E"
QUOTED = urllib.parse.quote(TOKEN)  # 123456%3AAB/C%2BD%3DE
FULL = urllib.parse.quote(TOKEN, safe="")  # 123456%3AAB%2FC%2BD%3DE
LOWER = re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), FULL)  # 123456%3aAB%2fC%2bD%3dE
FORMS = (TOKEN, QUOTED, FULL, LOWER)
ANSWERS = {
    "404 echoing the quoted path": (404, f"Not Found: /bot{QUOTED}/sendMessage"),
    "404 echoing the fully quoted path": (404, f"Not Found: /bot{FULL}/sendMessage"),
    "200 not ok echoing the raw token": (200, f"Unauthorized: bot {TOKEN} is unknown"),
    "401 echoing lower-case escapes": (401, f"Unauthorized: {LOWER}"),
}


def test_the_token_spellings_differ():
    assert len(set(FORMS)) == len(FORMS)


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_the_token_is_redacted_in_every_form(answer, caplog):
    status, description = ANSWERS[answer]
    paths = []

    def respond(method: str, path: str, raw: bytes):
        paths.append(path)
        return status, {"ok": False, "description": description}

    with caplog.at_level(logging.DEBUG, logger="parallel_dqn.telemetry.notify"), LoopbackJSONServer(respond) as server:
        notifier = Notifier(TOKEN, "-100424242", "run", base_url=server.url, min_interval=0, timeout=5)
        notifier.stopped("SIGTERM", "ckpt-000001")  # two messages: the first failure warns, the second is debug
        notifier.error(RuntimeError("boom"))
        notifier.close()
    assert len(paths) == 2 and notifier.failures == 2
    assert any(form in paths[0] for form in FORMS)  # the server did see the token: it was there to echo
    messages = [r.getMessage() for r in caplog.records]
    assert any("notification not sent" in m for m in messages), messages
    assert any("***" in m for m in messages), messages  # the echoed description is kept, the token is not
    for form in FORMS:
        assert not any(form in m for m in messages), (form, messages)
