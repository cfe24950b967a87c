"""``llm_gateway.v1``: the ``*_pb2`` modules here are generated from the ``.proto`` files
beside them when the package is built or installed (setup.py's ``build_protos``), never
checked in. Import them through ``extproc.contracts``.
"""
