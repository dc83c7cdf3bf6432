"""Settings: defaults < neve.yaml < environment < command-line flags.

Every setting has an environment name NEVE_<KEY>. The names people bring from vLLM
containers (MODEL, MAX_MODEL_LEN, ...) are honoured too, below their NEVE_ twins.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from neve.engine.registry import ENGINES
from neve.errors import ConfigError
from neve.ray.settings import KubeRaySettings
from neve.snowflake.settings import SpcsSettings
from neve.snowflake.stage import StageError, StageRef

CONFIG_FILE = "neve.yaml"

# Environment names from vLLM's container images, mapped to our keys.
VLLM_ENV_NAMES = {
    "MODEL": "model",
    "MAX_MODEL_LEN": "max_model_len",
    "TENSOR_PARALLEL_SIZE": "tensor_parallel_size",
    "GPU_MEMORY_UTILIZATION": "gpu_memory_utilization",
    "HF_TOKEN": "hf_token",
    "VLLM_API_KEY": "api_key",
}


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "neve"


class Upstream(BaseModel):
    """An OpenAI-compatible server the hub routes to (a vLLM, Ollama or llama.cpp server)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="base URL, e.g. http://gpu-1:8000 (with or without /v1)")
    api_key: SecretStr | None = Field(None, description="bearer key the upstream requires")
    name: str | None = Field(None, description="the name clients use for its (one) model")
    kind: Literal["chat", "embedding"] | None = Field(
        None,
        description="what its models are, where it does not say (vLLM does not; neve does): "
        "chat unless set",
    )


class Settings(BaseModel):
    """The hub's whole configuration. Field descriptions are shown by `neve config show`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address the API listens on")
    port: int = Field(8000, ge=1, le=65535, description="port the API listens on")
    ui_port: int = Field(
        8501, ge=1, le=65535, description="port the web UI listens on (neve up, neve ui)"
    )
    data_dir: Path = Field(default_factory=default_data_dir, description="where state lives")
    models_dir: Path | None = Field(
        None, description="downloaded models (default: <data_dir>/models)"
    )
    engine: str = Field(
        "llamacpp",
        description=", ".join(
            f"{name} ({e.about}{f'; neve[{e.extra}]' if e.extra else ''})"
            for name, e in ENGINES.items()
        ),
        json_schema_extra={"enum": list(ENGINES)},
    )
    model: str = Field(
        "smollm2",
        description="a catalog name, a local GGUF path, or a Hugging Face repo id",
    )
    model_file: str | None = Field(
        None, description="file (or glob) inside a Hugging Face repo, e.g. '*Q4_K_M.gguf'"
    )
    chat_template: str | None = Field(
        None, description="Jinja chat template (text or a file path) instead of the model's"
    )
    served_model_name: str | None = Field(
        None, description="name clients use in /v1/models (default: derived from model)"
    )
    max_model_len: int = Field(
        4096, ge=32, description="context tokens per sequence (prompt + completion)"
    )
    max_num_seqs: int = Field(16, ge=1, le=256, description="sequences decoded together")
    kv_cache_tokens: int = Field(
        16384, ge=32, description="KV cache cells all sequences share (at least max_model_len)"
    )
    max_queue: int = Field(64, ge=0, description="requests waiting for a sequence; 429 beyond")
    prefill_chunk: int = Field(
        256, ge=16, description="prompt tokens fed per decode step, so long prompts never stall"
    )
    prefix_cache: bool = Field(
        True,
        description="keep finished sequences' KV cells (copied to host memory) for "
        "prompts that start alike",
    )
    prefix_cache_mib: int = Field(
        2048, ge=1, description="host memory the prefix cache may hold, least recently "
        "used dropped first",
    )  # fmt: skip
    n_threads: int = Field(0, ge=0, description="CPU threads for llama.cpp (0 = all cores)")
    weight_repack: Literal["auto", "on", "off"] = Field(
        "auto",
        description="llama.cpp's extra weight buffers (CPU_REPACK: weights re-laid for "
        "faster matmuls; AMX): auto uses them unless llama.cpp lists AMX's, whose matmul "
        "crashes on some Intel hosts; on; off",
    )
    reasoning_split: bool = Field(
        True, description="move <think>...</think> text into reasoning_content"
    )
    max_request_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest accepted request body"
    )
    embedding_model: str = Field(
        "all-minilm-l6-v2",
        description="sentence-transformers model: shipped name, path or hub name",
    )
    embedding_batch_size: int = Field(32, ge=1, description="texts embedded per forward pass")
    embedding_backend: Literal["onnx-int8", "torch"] = Field(
        "onnx-int8",
        description="onnx-int8 (an int8 ONNX export made on first use, ~2.6x faster) or torch",
    )
    rag_chunk_tokens: int = Field(
        200, ge=32, description="embedding-model tokens per chunk, its heading line included"
    )
    rag_chunk_overlap: int = Field(40, ge=0, description="tokens a chunk repeats of the last")
    rag_top_k: int = Field(5, ge=1, le=100, description="passages an answer is grounded in")
    rag_mode: Literal["hybrid", "vector", "text"] = Field(
        "hybrid", description="retrieval: hybrid (vector + BM25 fused), vector or text"
    )
    rag_vector_weight: float = Field(1.0, ge=0, description="vector ranking's weight in fusion")
    rag_text_weight: float = Field(1.0, ge=0, description="BM25 ranking's weight in fusion")
    rag_opening_weight: float = Field(
        1.0, ge=0, description="weight of pages ranked by their document's opening (hybrid)"
    )
    rag_rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion's k")
    rag_candidates: int = Field(50, ge=1, description="candidates each ranking gives fusion")
    rag_per_page: int = Field(1, ge=1, description="chunks of one page among the results")
    rag_min_similarity: float = Field(
        0.25, ge=-1, le=1, description="cosine to the question a passage needs to count"
    )
    rag_link_texts: bool = Field(
        True, description="index each page with the texts of the links to it (HTML, Markdown)"
    )
    rag_link_text_tokens: int = Field(
        200, ge=16, description="embedding-model tokens of link texts kept per page"
    )
    rag_link_text_generic: int = Field(
        25, ge=1, description="a link text used for more pages than this is left out ('next')"
    )
    rag_prf: Literal["off", "vector", "text", "both"] = Field(
        "off",
        description="pseudo-relevance feedback: search again moved towards the first "
        "passages (vector: Rocchio; text: their shared words; both)",
    )
    rag_prf_passages: int = Field(3, ge=1, description="first passages feedback reads")
    rag_prf_weight: float = Field(0.5, ge=0, description="Rocchio's weight of those passages")
    rag_reranker: str = Field(
        "off",
        description="reranker of retrieval and /v1/rerank: off, a cross-encoder's folder (or "
        "training/rerank.py's), a Hugging Face id, or an upstream's URL (http(s)://.../v1)",
    )
    rag_reranker_model: str | None = Field(None, description="model named to an upstream reranker")
    rag_reranker_api_key: SecretStr | None = Field(
        None, description="API key of an upstream reranker"
    )
    rag_rerank_candidates: int = Field(
        20, ge=1, description="first passages of retrieval the reranker orders"
    )
    rag_rerank_budget: float = Field(
        0.12, gt=0, description="seconds of reranking per search (the rest keep their order)"
    )
    rag_rerank_tokens: int = Field(
        256, ge=16, description="tokens of question and passage the cross-encoder reads"
    )
    rerank_max_documents: int = Field(1000, ge=1, description="documents one /v1/rerank may send")
    rag_ann_min_rows: int = Field(
        100_000, ge=1, description="chunks from which an approximate vector index is built"
    )
    rag_ann_partition_rows: int = Field(
        65_536, ge=1, description="chunks per partition (HNSW graph) of the approximate index"
    )
    rag_ann_ef: int = Field(250, ge=10, description="HNSW search breadth (approximate index)")
    rag_ann_refine: int = Field(
        1, ge=1, description="candidates re-ranked exactly, as a multiple of those asked for"
    )
    rag_prompt: str = Field(
        "Answer the question using only the numbered sources below, and cite them by "
        "number, like [1]. If they do not contain the answer, say so.\n\n"
        "Sources:\n{sources}\n\nQuestion: {question}",
        description="prompt template with {sources} and {question}",
    )
    rag_no_answer: str = Field(
        "The documents I can see do not cover this.",
        description="the answer when no passage is relevant (the model is not asked)",
    )
    rag_max_upload_bytes: int = Field(
        50 * 1024 * 1024, ge=1024, description="largest document accepted by upload"
    )
    rag_folder_groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="groups for documents whose path matches a glob, e.g. {'*/hr/*': ['hr']}",
    )
    relay_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="a second port the hub also listens on, for a private endpoint "
        "(SPCS: the relay's, which the SQL functions call)",
    )
    relay_max_rows: int = Field(4096, ge=1, description="rows accepted in one /relay batch")
    relay_concurrency: int = Field(32, ge=1, description="relay rows generated at once")
    relay_max_tokens: int = Field(
        512, ge=1, description="completion tokens per relay row unless its options say"
    )
    relay_on_row_error: Literal["null", "fail"] = Field(
        "null", description="a failing row gives NULL, or fails the whole batch with 400"
    )
    relay_retry_ttl: float = Field(
        600, ge=0, description="seconds a batch answer is kept for Snowflake's retries"
    )
    relay_retry_entries: int = Field(1024, ge=0, description="batch answers kept for retries")
    relay_overload_wait: float = Field(
        30, ge=0, description="seconds a relay row waits for queue room before the batch gets 429"
    )
    upstream_url: str | None = Field(None, description="one upstream (engine openai)")
    upstream_api_key: SecretStr | None = Field(None, description="its bearer key")
    upstreams: list[Upstream] = Field(
        default_factory=list, description="several upstreams, routed by model name"
    )
    upstream_timeout: float = Field(
        600, gt=0, description="seconds to wait for an upstream's next bytes"
    )
    stream_keepalive: float = Field(
        15,
        ge=0,
        description="seconds a stream may wait for its next event before the hub sends an "
        "SSE keep-alive comment (proxies such as SPCS ingress drop idle connections); 0: none",
    )
    upstream_probe_interval: float = Field(
        2, gt=0, description="seconds between upstream health checks"
    )
    vllm_command: list[str] | None = Field(
        None, description="command that starts vLLM (default: this Python, -m vllm's server)"
    )
    vllm_extra_args: list[str] = Field(default_factory=list, description="more vLLM flags")
    pipeline_parallel_size: int = Field(1, ge=1, description="pipeline stages (vllm engine)")
    dtype: str = Field("auto", description="weights' dtype (vllm engine)")
    enforce_eager: bool = Field(False, description="no CUDA graphs (vllm engine)")
    trust_remote_code: bool = Field(False, description="run a model's own code (vllm engine)")
    reasoning_parser: str | None = Field(
        None, description="vLLM's reasoning parser, e.g. deepseek_r1"
    )
    vllm_start_timeout: float = Field(
        1800, gt=0, description="seconds vLLM may take to load before it counts as failed"
    )
    vllm_max_backoff: float = Field(
        60, gt=0, description="longest wait between restarts of a vLLM that died"
    )
    ray_address: str = Field(
        "local",
        description="Ray cluster (engine ray): auto (the one this node joined), its head's "
        "host:port, or local (a private single-node cluster)",
    )
    ray_app_name: str = Field("neve", description="the Ray Serve application's name")
    ray_deploy: bool = Field(
        True,
        description="deploy the application from these settings; false: use the one "
        "deployed as ray_app_name (by KubeRay's RayService, or serve deploy)",
    )
    ray_engine: Literal["llamacpp", "vllm"] = Field(
        "llamacpp", description="the engine each replica runs (vllm on GPU nodes)"
    )
    ray_min_replicas: int = Field(1, ge=1, description="replicas kept however idle")
    ray_max_replicas: int = Field(4, ge=1, description="replicas the autoscaler may add")
    ray_target_ongoing_requests: float = Field(
        4, gt=0, description="requests per replica the autoscaler aims at"
    )
    ray_max_ongoing_requests: int = Field(
        16, ge=1, description="requests one replica takes at once; more wait at the router"
    )
    ray_max_queued_requests: int = Field(
        256, ge=1, description="requests waiting for a replica; 429 beyond"
    )
    ray_upscale_delay: float = Field(
        30, ge=0, description="seconds load must stay high before a replica is added"
    )
    ray_downscale_delay: float = Field(
        600, ge=0, description="seconds load must stay low before a replica is removed"
    )
    ray_look_back_period: float = Field(
        30, gt=0, description="seconds of load the autoscaler averages"
    )
    ray_num_cpus: float = Field(1, ge=0, description="CPUs each replica reserves")
    ray_num_gpus: float = Field(0, ge=0, description="GPUs each replica reserves")
    ray_cpus_per_gpu: float = Field(
        1, ge=0, description="CPUs beside each GPU of a vLLM replica spread over several "
        "(tensor_parallel_size x pipeline_parallel_size above 1)",
    )  # fmt: skip
    ray_placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK"] = Field(
        "PACK",
        description="how a spread replica's GPUs are placed: PACK (as few nodes as fit), "
        "SPREAD (one per node where it can), STRICT_PACK (one node or none)",
    )
    ray_tp_across_nodes: bool = Field(
        False,
        description="allow tensor_parallel_size above a node's GPUs (all-reduce over the "
        "network); by default that layout is refused",
    )
    ray_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom resources each replica needs, to place it on a node type",
    )
    ray_graceful_shutdown_timeout: float = Field(
        900,
        gt=0,
        description="seconds a replica being removed may finish its streams (longer than "
        "the longest answer, so a downscale cuts none)",
    )
    ray_health_check_period: float = Field(
        10, gt=0, description="seconds between health checks of each replica"
    )
    ray_retries: int = Field(
        2,
        ge=0,
        description="times a request no byte of which was sent is retried on "
        "another replica after its replica died",
    )
    ray_stream_interval: float = Field(
        0.1,
        ge=0,
        description="seconds a replica gathers a stream's chunks before sending them on "
        "together, once its first text has gone (fewer objects across the cluster, tokens "
        "in small bursts); 0: each chunk alone",
    )
    ray_probe_interval: float = Field(
        2, gt=0, description="seconds between the hub's reads of the replicas' states"
    )
    ray_start_timeout: float = Field(
        600, gt=0, description="seconds the first replica may take to start"
    )
    api_key: SecretStr | None = Field(None, description="bearer key the API requires")
    hf_token: SecretStr | None = Field(None, description="token for Hugging Face downloads")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model (vllm engine)")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="share of GPU memory to use (vllm engine)"
    )
    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db "
        "(default: SQLite at <data_dir>/neve.db)",
    )
    database_timeout: float = Field(
        10, gt=0, description="seconds to wait for a database connection or lock"
    )
    database_pool: int = Field(10, ge=1, description="connections kept open (PostgreSQL)")
    instances: int = Field(
        1,
        ge=1,
        description="hub instances serving as one behind a load balancer; above 1 they share "
        "keys, rate limits, relay retries and documents through database_url (PostgreSQL)",
    )
    rag_stages: list[str] = Field(
        default_factory=list,
        description="Snowflake stages of documents the hub keeps ingested, e.g. "
        "@DB.SCHEMA.DOCS or @DB.SCHEMA.DOCS/folder (mounted as volumes inside SPCS, "
        "read through spcs.connection elsewhere)",
    )
    rag_stage_refresh: float = Field(
        300, gt=0, description="seconds between the hub's re-reads of rag_stages"
    )
    rag_sync_interval: float = Field(
        2, gt=0, description="seconds between an instance's looks for documents others wrote"
    )
    relay_claim_timeout: float = Field(
        10, gt=0, description="seconds an instance's unrenewed claim on a relay batch holds"
    )
    request_log_buffer: int = Field(
        10000, ge=1, description="request-log rows held while the database is away"
    )
    snowflake_tables: Literal["auto", "on", "off"] = Field(
        "auto",
        description="copy feedback and the request log into Snowflake tables "
        "(spcs.feedback_table, spcs.request_log_table) through spcs.connection; "
        "auto: on inside Snowpark Container Services",
    )
    snowflake_export_interval: float = Field(
        5, gt=0, description="seconds between copies of new rows to the Snowflake tables"
    )
    snowflake_export_rows: int = Field(
        200, ge=1, le=1000, description="rows sent to a Snowflake table in one statement"
    )
    trust_proxy_identity: bool = Field(
        False,
        description="take the caller from Sf-Context-Current-User (behind SPCS ingress only)",
    )
    default_rpm: int = Field(0, ge=0, description="requests per minute per key (0: no limit)")
    default_tpm: int = Field(0, ge=0, description="tokens per minute per key (0: no limit)")
    auth_refresh_interval: float = Field(
        5, gt=0, description="seconds between re-reads of the API keys from the database"
    )
    feedback_scores: list[int] = Field(
        default_factory=lambda: [1, -1], description="scores feedback may give (thumbs: 1, -1)"
    )
    responses_max_chain: int = Field(
        100, ge=1, description="stored responses a Responses API request may continue, "
        "one previous_response_id after another",
    )  # fmt: skip
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "warning", description="structured logs go to stderr at this level"
    )
    spcs: SpcsSettings = Field(
        default_factory=SpcsSettings,
        description="Snowpark Container Services deployment (neve deploy spcs)",
    )
    kuberay: KubeRaySettings = Field(
        default_factory=KubeRaySettings,
        description="Kubernetes deployment with KubeRay (neve deploy kuberay)",
    )

    @field_validator("rag_stages")
    @classmethod
    def _stages(cls, stages: list[str]) -> list[str]:
        try:
            return [str(StageRef.parse(stage)) for stage in stages]
        except StageError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        if name not in ENGINES:
            raise ValueError(f"{name!r} is not an engine; use one of {', '.join(ENGINES)}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.ray_min_replicas > self.ray_max_replicas:
            raise ValueError(
                f"ray_min_replicas ({self.ray_min_replicas}) must not exceed "
                f"ray_max_replicas ({self.ray_max_replicas})"
            )
        runs_llamacpp = self.engine == "llamacpp" or (
            self.engine == "ray" and self.ray_engine == "llamacpp"
        )
        if runs_llamacpp and self.kv_cache_tokens < self.max_model_len:
            raise ValueError(
                f"kv_cache_tokens ({self.kv_cache_tokens}) must be at least max_model_len "
                f"({self.max_model_len}), so one sequence of full length fits"
            )
        if self.rag_chunk_overlap >= self.rag_chunk_tokens // 2:
            raise ValueError(
                f"rag_chunk_overlap ({self.rag_chunk_overlap}) must be under half of "
                f"rag_chunk_tokens ({self.rag_chunk_tokens})"
            )
        if self.instances > 1 and not self.shared_database:
            raise ValueError(
                f"instances ({self.instances}) needs database_url to name a PostgreSQL "
                "database every instance reaches: state kept in SQLite or in one "
                "instance's memory would differ between instances"
            )
        if self.engine == "openai" and not self.all_upstreams:
            raise ValueError("engine 'openai' needs upstream_url (or upstreams)")
        return self

    @property
    def all_upstreams(self) -> list[Upstream]:
        if not self.upstream_url:
            return list(self.upstreams)
        return [*self.upstreams, Upstream(url=self.upstream_url, api_key=self.upstream_api_key)]

    @property
    def shared_database(self) -> bool:
        """Whether database_url names a server several instances can share."""
        url = self.database_url.get_secret_value() if self.database_url else ""
        return url.startswith(("postgresql", "postgres:"))

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def rag_path(self) -> Path:
        return self.data_dir / "rag"

    @property
    def url(self) -> str:
        return self._local_url(self.port)

    @property
    def ui_url(self) -> str:
        return self._local_url(self.ui_port)

    def _local_url(self, port: int) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{port}"


def _env_values(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Settings found in the environment, each with the variable it came from."""
    found: dict[str, tuple[str, str]] = {}
    for name, key in VLLM_ENV_NAMES.items():
        if environ.get(name):
            found[key] = (environ[name], name)
    for key in Settings.model_fields:
        name = f"NEVE_{key.upper()}"
        if environ.get(name):
            found[key] = (environ[name], name)
    return {key: (_list_from_text(key, value), name) for key, (value, name) in found.items()}


def _list_from_text(key: str, value: str) -> Any:
    """List and mapping settings from the environment (or --set): JSON, or for lists,
    words split as a shell splits them."""
    annotation = str(Settings.model_fields[key].annotation)
    if "list[" not in annotation and "dict[" not in annotation:
        return value
    if value.lstrip().startswith(("[", "{")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # validation names the key and the problem
    return value if annotation.startswith("dict[") else shlex.split(value)


def _file_values(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting: value")
    return data


def load_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the sources in order of precedence and validate once."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    path = config_file or (Path(environ["NEVE_CONFIG"]) if environ.get("NEVE_CONFIG") else None)
    if path is None and Path(CONFIG_FILE).is_file():
        path = Path(CONFIG_FILE)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: configuration file not found")
        for key, value in _file_values(path).items():
            values[str(key)] = value
            sources[str(key)] = str(path)
    for key, (value, name) in _env_values(environ).items():
        values[key] = value
        sources[key] = f"environment {name}"
    for key, value in (flags or {}).items():
        section, *inner = key.split(".")
        if inner and value is not None:  # --set spcs.ray.dns=X: one setting of a section
            node = values[section] = _copied(values.get(section))
            for part in inner[:-1]:
                child = node[part] = _copied(node.get(part))
                node = child
            node[inner[-1]] = _structured(value)
            sources[section] = "command line"
            continue
        if value is not None:
            if isinstance(value, str) and key in Settings.model_fields:
                value = _list_from_text(key, value)  # --set key=[...] as in the environment
            values[key] = value
            sources[key] = "command line"

    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, sources)) from None


def _copied(section: object) -> dict[str, Any]:
    return dict(section) if isinstance(section, dict) else {}


def _structured(value: object) -> object:
    """A section's setting from the command line: a list or object given as JSON, else
    the text as it is (pydantic converts it)."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _one_line(exc: ValidationError, sources: Mapping[str, str]) -> str:
    err = exc.errors()[0]
    if not err["loc"]:  # a rule across settings
        return f"invalid settings: {err['msg'].removeprefix('Value error, ')}"
    key = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown setting '{key}' (from {sources.get(key, 'settings')})"
    origin = sources.get(key.split(".")[0])
    where = f" (from {origin})" if origin else ""
    shown = "***" if key in _SECRET_KEYS else repr(err.get("input"))
    return f"invalid setting '{key}' = {shown}{where}: {err['msg']}"


_SECRET_KEYS = {k for k, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}


def changed(settings: Settings) -> dict[str, Any]:
    """The settings that differ from their defaults, as JSON values: what a deployment
    carries into its containers. Secrets and sections never travel this way (they go as
    the platform's secrets, or describe the deployment itself)."""
    now = settings.model_dump(mode="json")
    default = Settings.model_construct().model_dump(mode="json")
    return {
        key: value
        for key, value in now.items()
        if value != default[key]
        and key not in _SECRET_KEYS
        and not isinstance(getattr(settings, key), BaseModel)
    }


def environment(values: Mapping[str, Any]) -> dict[str, str]:
    """Settings as the NEVE_* variables that give them (lists and mappings in JSON)."""
    return {
        f"NEVE_{key.upper()}": json.dumps(v) if isinstance(v, list | dict) else str(v)
        for key, v in values.items()
    }


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`--set key=value` pairs from the command line."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(key, value, description) rows with secrets masked, for `neve config show`."""
    rows = []
    for key, field in Settings.model_fields.items():
        value = getattr(settings, key)
        if isinstance(value, BaseModel):  # a section: one row per setting in it
            rows += [
                (
                    f"{key}.{inner.alias or name}",
                    "" if v is None else str(v),
                    inner.description or "",
                )
                for name, inner in type(value).model_fields.items()
                for v in (getattr(value, name),)
            ]
            continue
        if isinstance(value, SecretStr):
            shown = "********" if value.get_secret_value() else ""
        elif value is None:
            shown = ""
        else:
            shown = str(value)
        if key == "models_dir" and value is None:
            shown = f"{settings.models_path}"
        rows.append((key, shown, field.description or ""))
    return rows
