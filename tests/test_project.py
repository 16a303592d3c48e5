"""The project's promises that are not code paths: docs list every key, versions agree, jobs are wired."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from custseg.core.config import SCHEMA

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


def test_every_stage_and_command_has_a_spark_submit_job() -> None:
    from custseg import pipeline

    commands = {s: s for s in pipeline.STAGES} | {"generate": "generate", "score": "score", "export": "export",
                                                     "run_pipeline": "run"}
    for job, command in commands.items():
        text = (REPO / "jobs" / f"{job}.py").read_text(encoding="utf-8")
        assert f'main(["{command}", *sys.argv[1:]])' in text
    assert sorted(p.stem for p in (REPO / "jobs").glob("*.py")) == sorted(commands)


def test_stages_are_folders_in_registry_order_and_import_no_other_stage() -> None:
    import ast

    from custseg import pipeline

    stages_dir = REPO / "lib" / "custseg" / "stages"
    packages = (*pipeline.STAGES, "export")  # export: a command (not in the run's order) with its own package
    assert sorted(p.name for p in stages_dir.iterdir() if p.is_dir() and p.name != "__pycache__") == \
        sorted(packages)
    for stage in packages:
        for path in (stages_dir / stage).glob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module] + \
                [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            others = [m for m in imported if m.startswith("custseg.stages.")
                      and not m.startswith(f"custseg.stages.{stage}")]
            assert others == [], f"{path.relative_to(REPO)} imports another stage: {others}"
            assert not any(m in ("custseg.pipeline", "custseg.runner", "custseg.cli") for m in imported), path


def test_no_file_in_lib_is_over_350_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in (REPO / "lib").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 350}
    assert long == {}


def test_help_explains_itself_without_starting_spark() -> None:
    out = subprocess.run([sys.executable, "-m", "custseg.cli", "run", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0
    for word in ("--conf", "--set", "--as-of", "--skip", "--only"):
        assert word in out.stdout
    top = subprocess.run([sys.executable, "-m", "custseg.cli", "--help"], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    from custseg import pipeline

    for stage in pipeline.ORDER:  # the stages, in order, with what each does
        assert f"  {stage.name:<10} {stage.help}" in top.stdout
    assert top.stdout.index("  ingest ") < top.stdout.index("  features ") < top.stdout.index("  profile ")
    score = subprocess.run([sys.executable, "-m", "custseg.cli", "score", "--help"], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
    assert "--model" in score.stdout and "latest" in score.stdout
