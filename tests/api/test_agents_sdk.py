"""OpenAI's Agents SDK (openai-agents) runs agents on a hub through the Responses API, its
default: one to a final answer, one calling a function tool. The shipped model is small;
forced to call the tool, it calls it again when shown the result, so the tool's agent
stops at its first call (tool_use_behavior) and the proof is the call and its result."""

from __future__ import annotations

import asyncio

import agents
import openai
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool

from tests.conftest import Hub

agents.set_tracing_disabled(True)  # its traces would go to OpenAI's servers


def _model(hub: Hub) -> OpenAIResponsesModel:
    client = openai.AsyncOpenAI(base_url=hub.api, api_key="unused", max_retries=0)
    return OpenAIResponsesModel("smollm2", client)


def test_an_agent_runs_to_its_final_output(hub: Hub) -> None:
    agent = Agent(name="brief", instructions="Answer in one short sentence.", model=_model(hub),
                  model_settings=ModelSettings(max_tokens=24, temperature=0))  # fmt: skip
    result = asyncio.run(Runner.run(agent, "What is the capital of France?"))
    assert "Paris" in result.final_output
    usage = result.raw_responses[-1].usage
    assert usage.requests == 1 and usage.input_tokens > 10 and 0 < usage.output_tokens <= 24


def test_an_agent_calls_a_function_tool(hub: Hub) -> None:
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"-3 degrees and snowing in {city}"

    agent = Agent(
        name="weather", instructions="Use the tools.", model=_model(hub), tools=[get_weather],
        model_settings=ModelSettings(max_tokens=60, temperature=0, tool_choice="get_weather"),
        tool_use_behavior="stop_on_first_tool",
    )  # fmt: skip
    result = asyncio.run(Runner.run(agent, "What is the weather in Oslo?", max_turns=2))
    assert asked and "Oslo" in asked[0]
    assert result.final_output == f"-3 degrees and snowing in {asked[0]}"
