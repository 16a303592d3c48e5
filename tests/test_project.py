"""The project's promises that are not code paths: docs list every key, versions agree, jobs are wired."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from custseg.config import SCHEMA

REPO = Path(__file__).resolve().parents[1]


def test_readme_documents_every_configuration_key() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [k for k in SCHEMA if f"`{k}`" not in readme]
    assert missing == []


def test_delta_jar_version_matches_the_python_package() -> None:
    pom = (REPO / "scripts" / "delta-jars.pom.xml").read_text(encoding="utf-8")
    artifact, jar_version = re.search(r"<artifactId>(delta-spark_[^<]+)</artifactId>\s*<version>([^<]+)</version>",
                                      pom).groups()
    assert jar_version == version("delta-spark")
    spark_major_minor = ".".join(version("pyspark").split(".")[:2])
    assert artifact == f"delta-spark_{spark_major_minor}_2.13"


def test_every_stage_has_a_spark_submit_job() -> None:
    for job, command in [("generate", "generate"), ("ingest", "ingest"), ("features", "features"),
                         ("segment", "segment"), ("profile", "profile"), ("run_pipeline", "run")]:
        text = (REPO / "jobs" / f"{job}.py").read_text(encoding="utf-8")
        assert f'main(["{command}", *sys.argv[1:]])' in text


def test_help_explains_itself_without_starting_spark() -> None:
    out = subprocess.run([sys.executable, "-m", "custseg.cli", "run", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0
    for word in ("--conf", "--set", "--as-of", "--skip", "--only"):
        assert word in out.stdout
