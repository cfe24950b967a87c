"""A Model Armor server for the tests: the ``google.cloud.modelarmor.v1.ModelArmor`` gRPC service's
``SanitizeUserPrompt`` and ``SanitizeModelResponse``, with the request and answer messages of the
``google-cloud-modelarmor`` package itself (so the real client talks to it as to Google's).

It knows the templates in ``TEMPLATES`` (others: NOT_FOUND, as the real API answers). Its filters,
by the text:

- ``hurt them``: the RAI filter matches (``dangerous``);
- ``ignore previous instructions``: the prompt injection and jailbreak filter matches;
- an email address: Sensitive Data Protection matches; the ``inspect`` template reports it
  (inspect result), the ``deidentify`` template answers the text with every address replaced by
  ``[EMAIL_ADDRESS]`` (de-identify result);
- ``slow-please``: answers after 2 s; ``break-me``: an INTERNAL error; ``skip-all``: invocation
  FAILURE (no filter ran); ``skip-some``: PARTIAL.

It keeps what it received (method, template name, text, metadata). It runs in a thread of the test
process, on its own event loop.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud import modelarmor_v1 as ma

from extproc.ports import free_port

PROJECT, LOCATION = "test-project", "us-central1"
TEMPLATES = ("inspect", "deidentify")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
SERVICE = "google.cloud.modelarmor.v1.ModelArmor"

FOUND, CLEAN = ma.FilterMatchState.MATCH_FOUND, ma.FilterMatchState.NO_MATCH_FOUND
RaiType = ma.RaiFilterResult.RaiFilterTypeResult


def template_name(template: str) -> str:
    return f"projects/{PROJECT}/locations/{LOCATION}/templates/{template}"


def _state(hit: bool) -> ma.FilterMatchState:
    return FOUND if hit else CLEAN


def sanitize(template: str, text: str) -> ma.SanitizationResult:
    """What the template's filters say about ``text``."""
    ok = ma.FilterExecutionState.EXECUTION_SUCCESS
    hurt = "hurt them" in text.lower()
    rai = ma.RaiFilterResult(
        execution_state=ok,
        match_state=_state(hurt),
        rai_filter_type_results={
            "dangerous": RaiType(filter_type=ma.RaiFilterType.DANGEROUS, match_state=_state(hurt)),
            "harassment": RaiType(filter_type=ma.RaiFilterType.HARASSMENT, match_state=CLEAN),
        },
    )
    injection = "ignore previous instructions" in text.lower()
    pi = ma.PiAndJailbreakFilterResult(execution_state=ok, match_state=_state(injection))
    email = EMAIL.search(text) is not None
    if template == "deidentify":
        deid = ma.SdpDeidentifyResult(execution_state=ok, match_state=_state(email))
        if email:
            deid.data = ma.DataItem(text=EMAIL.sub("[EMAIL_ADDRESS]", text))
            deid.info_types = ["EMAIL_ADDRESS"]
        sdp = ma.SdpFilterResult(deidentify_result=deid)
    else:
        sdp = ma.SdpFilterResult(
            inspect_result=ma.SdpInspectResult(execution_state=ok, match_state=_state(email))
        )
    results = {
        "rai": ma.FilterResult(rai_filter_result=rai),
        "pi_and_jailbreak": ma.FilterResult(pi_and_jailbreak_filter_result=pi),
        "sdp": ma.FilterResult(sdp_filter_result=sdp),
    }
    invocation = ma.InvocationResult.SUCCESS
    if "skip-all" in text:
        invocation, results = ma.InvocationResult.FAILURE, {}
    elif "skip-some" in text:
        invocation = ma.InvocationResult.PARTIAL
        del results["rai"]
    return ma.SanitizationResult(
        filter_match_state=_state(hurt or injection or email),
        filter_results=results,
        invocation_result=invocation,
    )


@dataclass
class ModelArmorServer:
    port: int = field(default_factory=free_port)
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _answer(self, method: str, name: str, text: str, context: grpc.aio.ServicerContext) -> Any:
        self.received.append(
            {
                "method": method,
                "name": name,
                "text": text,
                "metadata": dict(context.invocation_metadata() or ()),
            }
        )
        template = name.rsplit("/", 1)[-1]
        if name != template_name(template) or template not in TEMPLATES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Template {name} not found")
        if "break-me" in text:
            await context.abort(grpc.StatusCode.INTERNAL, "broken on purpose")
        if "slow-please" in text:
            await asyncio.sleep(2)
        return sanitize(template, text)

    async def user_prompt(
        self, request: ma.SanitizeUserPromptRequest, context: grpc.aio.ServicerContext
    ) -> ma.SanitizeUserPromptResponse:
        text = request.user_prompt_data.text
        result = await self._answer("SanitizeUserPrompt", request.name, text, context)
        return ma.SanitizeUserPromptResponse(sanitization_result=result)

    async def model_response(
        self, request: ma.SanitizeModelResponseRequest, context: grpc.aio.ServicerContext
    ) -> ma.SanitizeModelResponseResponse:
        text = request.model_response_data.text
        result = await self._answer("SanitizeModelResponse", request.name, text, context)
        return ma.SanitizeModelResponseResponse(sanitization_result=result)

    def handler(self) -> grpc.GenericRpcHandler:
        def method(fn: Any, req: Any, resp: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.deserialize, response_serializer=resp.serialize
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "SanitizeUserPrompt": method(
                    self.user_prompt, ma.SanitizeUserPromptRequest, ma.SanitizeUserPromptResponse
                ),
                "SanitizeModelResponse": method(
                    self.model_response, ma.SanitizeModelResponseRequest, ma.SanitizeModelResponseResponse
                ),
            },
        )

    def start(self) -> ModelArmorServer:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)  # grpc.aio's server takes the thread's loop
            self._loop = loop
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((self.handler(),))
            server.add_insecure_port(f"127.0.0.1:{self.port}")
            loop.run_until_complete(server.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(server.stop(None))

        self._thread = threading.Thread(target=serve, name="model-armor", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Model Armor test server did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def last(self, method: str) -> dict[str, Any]:
        return next(r for r in reversed(self.received) if r["method"] == method)

    def texts(self, method: str) -> list[str]:
        return [r["text"] for r in self.received if r["method"] == method]
