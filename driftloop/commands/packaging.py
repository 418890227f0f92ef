"""``driftloop manifests`` and ``driftloop package-function``: ship what ops deploy."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import typer

from driftloop.settings import PROJECT_ROOT, Settings

FUNCTIONS_DIR = PROJECT_ROOT / "functions"


def stage_wheelhouse(name: str, *, deps: bool = True, python: str = sys.executable,
                     out: Path | None = None) -> Path:
    """Build ``functions/<name>/wheels`` (or ``out``): the driftloop wheel plus (with
    ``deps``) every wheel its requirements need, so the image build installs with no index
    at all. The driftloop wheel carries the retrain/promotion policies (package data), so
    a deployed function finds them without a checkout beside it."""
    fn = FUNCTIONS_DIR / name
    if not (fn / "func.yaml").exists():
        raise typer.BadParameter(f"functions/{name}/func.yaml not found", param_hint="NAME")
    out = out or fn / "wheels"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("driftloop-*.whl"):
        old.unlink()
    pip = [python, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(out)]
    subprocess.run([*pip, "--no-deps", str(PROJECT_ROOT)], check=True)
    if deps:
        (wheel,) = out.glob("driftloop-*.whl")
        reqs = fn / "requirements.txt"
        lines = reqs.read_text().splitlines() if reqs.exists() else []
        third_party = [
            ln for ln in lines if ln.strip() and not ln.strip().startswith(("#", "driftloop"))
        ]
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as tmp:
            tmp.write("\n".join(third_party) + "\n")
        subprocess.run([*pip, str(wheel), "-r", tmp.name], check=True)
        Path(tmp.name).unlink()
    return out


def register(app: typer.Typer) -> None:
    @app.command("manifests")
    def manifests(
        dirs: list[Path] = typer.Argument(None, help="kustomize directories (default: all)"),  # noqa: B008
    ) -> None:
        """Build every kustomize directory and validate each document against its upstream
        schema; also check every function's func.yaml. Exit 1 on any error."""
        from driftloop.manifests import (
            ManifestBuildError,
            Schemas,
            default_targets,
            validate_directory,
            validate_func_yaml,
        )

        cache = Settings().cache_dir
        schemas = Schemas(cache / "schemas" / "index")
        failed = False
        for d in dirs or default_targets():
            try:
                report = validate_directory(d, schemas, cache / "bin" / "kustomize")
            except ManifestBuildError as e:
                typer.echo(str(e).splitlines()[0][:2000], err=True)
                failed = True
                continue
            for error in report.errors:
                typer.echo(str(error), err=True)
            for u in report.unvalidated:
                typer.echo(f"{u.file}: {u.kind}/{u.name}: not validated ({u.reason})")
            typer.echo(
                f"{report.directory}: {report.documents} documents, {len(report.errors)} errors"
            )
            failed |= not report.ok
        if not dirs:
            for f in sorted(FUNCTIONS_DIR.glob("*/func.yaml")):
                errors = validate_func_yaml(f, schemas)
                for error in errors:
                    typer.echo(str(error), err=True)
                failed |= bool(errors)
            from driftloop.annotations import Catalogue, check_files, default_files

            catalogue = Catalogue.load(cache / "schemas" / "annotations")
            key_errors = check_files(default_files(), catalogue)
            for ke in key_errors:
                typer.echo(str(ke), err=True)
            typer.echo(f"annotation and label keys: {len(key_errors)} errors")
            failed |= bool(key_errors)
        raise typer.Exit(1 if failed else 0)

    @app.command("package-function")
    def package_function(
        name: str = typer.Argument(..., help="function folder under functions/"),
        deps: bool = typer.Option(True, help="also fetch the wheels of every dependency"),
        out: Path | None = typer.Option(  # noqa: B008
            None, help="wheelhouse folder (default functions/NAME/wheels)"),
    ) -> None:
        """Stage functions/NAME/wheels for `kn func build` (the buildpack installs offline)."""
        out = stage_wheelhouse(name, deps=deps, out=out)
        typer.echo(f"{len(list(out.glob('*.whl')))} wheels in {out}")
