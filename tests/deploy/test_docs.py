"""docs/deployment.md and docs/monitoring.md: their commands say when they cannot run on
a machine without Docker or Kubernetes, and the files they name exist."""

from __future__ import annotations

import re

import pytest

from tests.deploy.deployfiles import DOCS, ROOT, relative

SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console"}
# Commands that need a Docker engine or a cluster, which the test machines do not have.
NEEDS_INFRASTRUCTURE = re.compile(r"^\s*(?:[A-Z_]+=\S+\s+)*(docker|kubectl|helm|kustomize)\b"
                                  r"|\$\((?:docker|kubectl)\b|&&\s*(?:docker|kubectl|kustomize)\b",
                                  re.MULTILINE)
MARKER = re.compile(r"^# Not runnable here: needs .+", re.MULTILINE)


def _shell_blocks(text: str) -> list[str]:
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    return [body for language, body in blocks if language in SHELL_LANGUAGES]


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_shell_blocks_that_need_docker_or_kubernetes_say_so(doc):
    blocks = _shell_blocks(doc.read_text(encoding="utf-8"))
    assert blocks
    for block in blocks:
        if NEEDS_INFRASTRUCTURE.search(block):
            first = block.lstrip().splitlines()[0]
            assert MARKER.match(first), f"{doc.name}: block without the marker:\n{block}"


def test_the_marker_check_sees_docker_and_kubectl_commands():
    assert NEEDS_INFRASTRUCTURE.search("JWT_SECRET=x docker compose up -d")
    assert NEEDS_INFRASTRUCTURE.search("TOKEN=$(docker compose exec -T push-1 python)")
    assert NEEDS_INFRASTRUCTURE.search("cd deploy && kustomize edit set image x")
    assert NEEDS_INFRASTRUCTURE.search("  kubectl apply -k deploy/kubernetes")
    assert not NEEDS_INFRASTRUCTURE.search("promtool check rules deploy/prometheus/alerts.yml")


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_files_the_docs_name_exist(doc):
    text = doc.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:deploy|docs|tests|scripts)/[\w./-]*\w)`", text))
    named |= {f"docs/{name}" for name in re.findall(r"\]\((\w+\.md)\)", text)}
    assert named
    for name in sorted(named):
        assert (ROOT / name).exists(), f"{relative(doc)} names missing {name}"
