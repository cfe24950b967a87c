"""Presidio's analyzer and anonymizer REST APIs on the real engines, for the presidio guard's tests.

The routes, request parsing and JSON answers are those of the presidio-analyzer and
presidio-anonymizer images' Flask apps (presidio-analyzer/app.py, presidio-anonymizer/app.py):

- analyzer: ``GET /health``, ``POST /analyze`` (``AnalyzerRequest`` fields; a JSON list of
  results, ``recognition_metadata`` left out, keys sorted; 500 ``{"error"}`` on a bad request),
  ``GET /recognizers``, ``GET /supportedentities``;
- anonymizer: ``GET /health``, ``POST /anonymize`` (``{"text", "items"}``; 422 ``{"error"}`` for
  invalid parameters), ``GET /anonymizers``.

No spaCy model can be installed here (PyPI only), so the analyzer runs Presidio's
``NoOpNlpEngine`` with the predefined recognizers that need no model: every pattern recognizer
the image loads (credit card with its Luhn check, email, US SSN, IBAN, IP, URL, ...) and the
phone recognizer (the ``phonenumbers`` library); PERSON and LOCATION, which need spaCy's NER, are
not found. tldextract (the email recognizer's domain check) reads its bundled suffix list
instead of fetching one. Each server runs in a thread of the test process, on its own loop, and
keeps what it received; ``fail`` makes the next answers HTTP 500.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from aiohttp import web

from extproc.ports import free_port


@cache
def analyzer_engine() -> Any:
    import tldextract
    import tldextract.tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    # No network: the suffix list that ships with tldextract, not the one it would download.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    nlp.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp)
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])


@cache
def anonymizer_engine() -> Any:
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def analyze(content: Any) -> web.Response:
    """presidio-analyzer/app.py's /analyze, one text or a list of them."""
    from presidio_analyzer import AnalyzerRequest, BatchAnalyzerEngine

    engine = analyzer_engine()
    try:
        req = AnalyzerRequest(content)
        if not req.text:
            raise Exception("No text provided")
        batch_request = isinstance(req.text, list)
        batch = req.text if batch_request else [req.text]
        if not req.language:
            raise Exception("No language provided")
        engine.get_supported_entities(req.language)
        results = []
        for found in BatchAnalyzerEngine(engine).analyze_iterator(
            texts=batch,
            batch_size=len(batch),
            language=req.language,
            correlation_id=req.correlation_id,
            score_threshold=req.score_threshold,
            entities=req.entities,
            return_decision_process=req.return_decision_process,
            ad_hoc_recognizers=req.ad_hoc_recognizers,
            context=req.context,
            allow_list=req.allow_list,
            allow_list_match=req.allow_list_match,
            regex_flags=req.regex_flags,
        ):
            for result in found:
                if hasattr(result, "recognition_metadata"):
                    delattr(result, "recognition_metadata")
            results.append(found)
        text = json.dumps(
            results if batch_request else results[0], default=lambda o: o.to_dict(), sort_keys=True
        )
        return web.Response(text=text, content_type="application/json")
    except TypeError as exc:
        return _json(
            {"error": f"Failed to parse /analyze request for AnalyzerEngine.analyze(). {exc.args[0]}"}, 400
        )
    except Exception as exc:
        return _json({"error": exc.args[0]}, 500)


def anonymize(content: Any) -> web.Response:
    """presidio-anonymizer/app.py's /anonymize."""
    from presidio_anonymizer.entities import InvalidParamError
    from presidio_anonymizer.services.app_entities_convertor import AppEntitiesConvertor

    if not content:
        return _json({"error": "Invalid request json"}, 400)
    try:
        operators = AppEntitiesConvertor.operators_config_from_json(content.get("anonymizers"))
        if AppEntitiesConvertor.check_custom_operator(operators):
            return _json({"error": "Custom type anonymizer is not supported"}, 400)
        results = AppEntitiesConvertor.analyzer_results_from_json(content.get("analyzer_results"))
        done = anonymizer_engine().anonymize(
            text=content.get("text", ""), analyzer_results=results, operators=operators
        )
    except InvalidParamError as err:
        return _json({"error": err.err_msg}, 422)
    except Exception:
        return _json({"error": "Internal server error"}, 500)
    return web.Response(text=done.to_json(), content_type="application/json")


@dataclass
class PresidioServer:
    """One of the two services: ``kind`` is ``analyzer`` or ``anonymizer``."""

    kind: str
    port: int = field(default_factory=free_port)
    received: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False  # answer HTTP 500, as a broken service would

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _post(self, request: web.Request) -> web.Response:
        try:
            content = await request.json()
        except json.JSONDecodeError:
            return _json({"error": "Invalid request json"}, 400)
        # A copy: the anonymizer's convertor pops "type" out of the operators it reads.
        self.received.append({"path": request.path, "body": copy.deepcopy(content)})
        if self.fail:
            return _json({"error": "Internal server error"}, 500)
        return analyze(content) if self.kind == "analyzer" else anonymize(content)

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text=f"Presidio {self.kind.capitalize()} service is up")

    async def _list(self, request: web.Request) -> web.Response:
        if self.kind == "anonymizer":
            return _json(anonymizer_engine().get_anonymizers())
        engine = analyzer_engine()
        language = request.query.get("language")
        if request.path == "/recognizers":
            return _json([r.name for r in engine.get_recognizers(language)])
        return _json(engine.get_supported_entities(language))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        if self.kind == "analyzer":
            app.router.add_post("/analyze", self._post)
            app.router.add_get("/recognizers", self._list)
            app.router.add_get("/supportedentities", self._list)
        else:
            app.router.add_post("/anonymize", self._post)
            app.router.add_get("/anonymizers", self._list)
        return app

    def start(self) -> PresidioServer:
        # Built before serving: the first analysis would otherwise spend a second importing.
        analyzer_engine() if self.kind == "analyzer" else anonymizer_engine()
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(self.app(), access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=serve, name=f"presidio-{self.kind}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def last(self) -> dict[str, Any]:
        return self.received[-1]["body"]  # type: ignore[no-any-return]
