"""Build hook: compile protos/**/*.proto with grpcio-tools into the ``llm_gateway`` package.

All metadata lives in pyproject.toml; this file only adds the ``build_protos`` step, run by
``build`` after ``build_py`` (so a stale module left in the source tree by an earlier editable
install is overwritten, not shipped):

- a wheel (``pip wheel .``, ``pip install .``): the modules are written into ``build_lib``,
  the source tree is left as it was;
- an editable install (``pip install -e .``, PEP 660 sets ``editable_mode``): they are written
  next to the ``.proto`` files in ``protos/llm_gateway/``, which the editable finder maps to
  the ``llm_gateway`` package. They are in .gitignore; re-run the install after editing a proto
  (``make venv`` does when a ``.proto`` changed).

grpcio-tools is pinned in [build-system] requires: its bundled protoc decides the gencode
version, which the protobuf runtime must be at least (see the protobuf floor in dependencies).
"""

from __future__ import annotations

import logging
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build

PACKAGE = "llm_gateway"


class BuildProtos(Command):
    description = "compile the project's .proto files into the llm_gateway package"
    user_options: list[tuple[str, str | None, str]] = []

    def initialize_options(self) -> None:
        self.build_lib: str | None = None
        self.editable_mode = False

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def _proto_root(self) -> Path:
        """The include root: the folder that holds ``llm_gateway/`` (protos/), from pyproject's find."""
        build_py = self.get_finalized_command("build_py")
        return Path(build_py.get_package_dir(PACKAGE)).parent

    def _sources(self) -> list[Path]:
        root = self._proto_root()
        return sorted(p.relative_to(root) for p in (root / PACKAGE).rglob("*.proto"))

    def _build_lib(self) -> Path:
        assert self.build_lib, "finalize_options sets it"
        return Path(self.build_lib)

    def _out_dir(self) -> Path:
        return self._proto_root() if self.editable_mode else self._build_lib()

    def _generated(self, out: Path) -> list[str]:
        return [
            str(out / proto.with_name(proto.stem + suffix))
            for proto in self._sources()
            for suffix in ("_pb2.py", "_pb2.pyi")
        ]

    def run(self) -> None:
        # Imported here: grpcio-tools is a build requirement, not a runtime one.
        from importlib.resources import files

        from grpc_tools import protoc

        root, out = self._proto_root(), self._out_dir()
        sources = self._sources()
        if not sources:
            raise SystemExit(f"build_protos: no .proto files under {root / PACKAGE}")
        out.mkdir(parents=True, exist_ok=True)
        well_known = files("grpc_tools") / "_proto"  # google/protobuf/*.proto
        args = [
            "grpc_tools.protoc",
            f"--proto_path={root}",
            f"--proto_path={well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            *(str(root / s) for s in sources),
        ]
        self.announce(f"build_protos: {' '.join(args[1:])}", level=logging.INFO)
        if protoc.main(args) != 0:
            raise SystemExit("build_protos: protoc failed (its message is above)")

    def get_source_files(self) -> list[str]:
        root = self._proto_root()
        return [str(root / s) for s in self._sources()]

    def get_outputs(self) -> list[str]:
        return self._generated(self._build_lib())

    def get_output_mapping(self) -> dict[str, str]:
        # Editable installs: which build_lib path each in-place module stands for.
        if not self.editable_mode:
            return {}
        return dict(zip(self.get_outputs(), self._generated(self._proto_root()), strict=True))


class Build(build):
    sub_commands = [
        *[c for c in build.sub_commands if c[0] == "build_py"],
        ("build_protos", None),
        *[c for c in build.sub_commands if c[0] != "build_py"],
    ]


setup(cmdclass={"build": Build, "build_protos": BuildProtos})
