"""Every keyword the course passes to its libraries exists in the installed versions: a guard against API drift.

An upgrade of Unsloth, TRL, PEFT, transformers, LangChain, sentence-transformers, Chroma or the ``openai`` client that
renames or drops a keyword fails here, with the keyword, the callable and the line, not in a student's cell. No course
code runs and no model is loaded: the code is read with ``ast`` and each keyword is looked up in the signature of
the installed callable (after ``import helpers.models``, so that Unsloth has patched TRL and transformers, as in the
notebooks).

Read: every .py file under src/helpers and the code cells of notebooks/NN_*.ipynb (lines starting with % or ! left
out). A file, or a notebook across all its cells, has one mapping of the names it imports (function-level imports
included), so a call is found wherever its import sits. A location reads "src/helpers/models.py:78" or
"notebooks/03_fine_tuning.ipynb cell 17 line 5" (the cell's index in the notebook's list of cells, from 0).

Checked, for every keyword argument (``**splats`` at a call are not, except the helpers' dicts below):
- calls whose callee resolves through the imports to a library (``SFTConfig(...)``, ``trl.SFTTrainer(...)``,
  ``FastLanguageModel.get_peft_model(...)``, ``chromadb.config.Settings(...)``), also where a helpers module
  re-exports the library's name;
- calls on a variable holding a library object, recognised by the variable's name (INSTANCE_CALLS):
  ``client.chat.completions.create``, ``model.generate``, ``tokenizer(...)``, ``store.similarity_search_with_score``...;
- the keys of the helpers' dicts that are splatted into a library call (KEYWORD_BUILDERS): the SFTConfig settings,
  the generation arguments, the Llama-3-8B sizes.
A call to a library name that no longer exists fails too.

A keyword is accepted when the callable names it: a function's parameters, a class's constructor, a dataclass's
fields, a pydantic model's fields and their aliases (a pydantic model is taken to use nothing else: LangChain moves an
unknown name into model_kwargs with a warning). Where the callable takes ``**kwargs``, the keyword is looked up where
they go: FORWARDS names that for the calls the course makes, and a class is taken to pass them to its parent's
``__init__``. A keyword that goes into a ``**kwargs`` nothing more can be read from is "unverifiable": listed by
test_keywords_that_only_kwargs_accept_are_listed, never failed.

Not covered: methods called on variables the table does not name (``trainer.train()``, ``record_manager.list_keys()``,
``base_rag.batch(...)``: no keywords today), chains on a returned value (``load_embeddings(...).embed_documents``),
positional arguments, the values passed (``optim="adamw_8bit"`` is not checked against the optimisers), methods the
course overrides (``CourseModel._generate``), ``apply_chat_template`` (the course does not call it), and the
benchmarks/ and scripts/ folders.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "src" / "helpers"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# Each langchain_* package counts as "langchain".
LIBRARIES = ("unsloth", "trl", "peft", "transformers", "langchain", "openai", "sentence_transformers", "chromadb")

# Calls on a variable, recognised by its name ("tuned_model" and "self.model" are a "model"): (the variable's name,
# the attributes called on it, "" when the variable itself is called; the library callable reached; a package the
# file or notebook must import for the row to apply, or None).
INSTANCE_CALLS = (
    ("client", "chat.completions.create", "openai.resources.chat.completions.Completions.create", None),
    ("client", "completions.create", "openai.resources.completions.Completions.create", None),
    ("model", "generate", "transformers.GenerationMixin.generate", None),
    ("model", "load_adapter", "peft.PeftModel.load_adapter", None),
    ("tokenizer", "", "transformers.PreTrainedTokenizerBase.__call__", None),
    ("tokenizer", "decode", "transformers.PreTrainedTokenizerBase.decode", None),
    ("tokenizer", "batch_decode", "transformers.PreTrainedTokenizerBase.batch_decode", None),
    ("store", "as_retriever", "langchain_chroma.Chroma.as_retriever", None),
    ("store", "similarity_search", "langchain_chroma.Chroma.similarity_search", None),
    ("store", "similarity_search_with_score", "langchain_chroma.Chroma.similarity_search_with_score", None),
    ("store", "similarity_search_by_vector", "langchain_chroma.Chroma.similarity_search_by_vector", None),
    ("store", "add_documents", "langchain_chroma.Chroma.add_documents", None),
    # helpers.serving has a store of its own and msgspec an encoder: these two only where the library is imported.
    ("store", "get", "langchain_chroma.Chroma.get", "langchain_chroma"),
    ("encoder", "encode", "sentence_transformers.SentenceTransformer.encode", "sentence_transformers"),
    ("llm", "batch", "langchain_core.language_models.llms.BaseLLM.batch", None),
)

# Where the **kwargs of a callable the course calls go: (the callables that receive them, whether a name none of them
# takes is a mistake). "X()" stands for the attributes of a default X.
FORWARDS = {
    "unsloth.FastLanguageModel.from_pretrained": (("transformers.PreTrainedModel.from_pretrained",), False),
    # Unsloth builds LoraConfig(**kwargs), a dataclass: an unknown name is a TypeError.
    "unsloth.FastLanguageModel.get_peft_model": (("peft.LoraConfig",), True),
    # generate sets GenerationConfig attributes, passes the rest to the model's forward and raises on a name neither
    # uses. The course's models are Llama-architecture (SmolLM2, Llama 3).
    "transformers.GenerationMixin.generate": (
        ("transformers.GenerationConfig()", "transformers.LlamaForCausalLM.forward"), True),
    "transformers.AutoModelForCausalLM.from_pretrained": (("transformers.PreTrainedModel.from_pretrained",), False),
    "transformers.AutoTokenizer.from_pretrained": (("transformers.PreTrainedTokenizerBase.from_pretrained",), False),
    "transformers.TextStreamer": (("transformers.PreTrainedTokenizerBase.decode",), False),
    "transformers.TextIteratorStreamer": (("transformers.PreTrainedTokenizerBase.decode",), False),
    # as_retriever(**kwargs) builds VectorStoreRetriever(**kwargs), a pydantic model.
    "langchain_chroma.Chroma.as_retriever": (("langchain_core.vectorstores.VectorStoreRetriever",), True),
}

# Callables whose keywords are data, not options: any name is right.
ANY_KEYWORD = ("langchain_core.runnables.RunnableParallel",)  # each keyword names a step of the map

# Helpers whose dict is splatted into a library call (``trl.SFTConfig(**sft_settings(profile))``): its keys are
# checked as keywords of that call. A name here that no helpers module defines any more fails the test.
KEYWORD_BUILDERS = {
    "sft_settings": "trl.SFTConfig",
    "generation_arguments": "transformers.GenerationMixin.generate",
    "LLAMA3_8B_SIZES": "transformers.LlamaConfig",
}

# The library calls the course is built on: if the reader finds none of them, the reader is broken, not the course.
MUST_FIND = (
    "unsloth.FastLanguageModel.from_pretrained",
    "unsloth.FastLanguageModel.get_peft_model",
    "trl.SFTConfig",
    "trl.SFTTrainer",
    "transformers.GenerationMixin.generate",
    "langchain_chroma.Chroma",
    "langchain_huggingface.HuggingFaceEmbeddings",
    "langchain_core.indexing.index",
    "langchain_openai.OpenAI",
    "openai.OpenAI",
    "openai.resources.chat.completions.Completions.create",
)
NOTEBOOKS_CALLING_LIBRARIES = ("03_fine_tuning", "04_indexing", "05_rag", "07_serving")

ACCEPTED, DRIFT, UNVERIFIABLE = "accepted", "drift", "unverifiable"


# --- Reading the course ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A parsed file, or one code cell of a notebook."""

    path: str  # relative to the repository
    cell: int | None
    tree: ast.Module

    def at(self, line: int) -> str:
        return f"{self.path}:{line}" if self.cell is None else f"{self.path} cell {self.cell} line {line}"


@dataclass(frozen=True)
class Source:
    """A Python file, or a whole notebook: parts that share one mapping of imported names."""

    module: str | None  # "helpers.serving.app" for a helpers file, else None
    package: str | None  # what its relative imports are relative to
    parts: tuple[Part, ...]


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def python_source(path: Path) -> Source:
    dotted = ".".join(path.relative_to(HELPERS.parent).with_suffix("").parts)
    is_package = path.name == "__init__.py"
    module = dotted.removesuffix(".__init__")
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return Source(module, module if is_package else module.rpartition(".")[0],
                  (Part(shown(path), None, tree),))


def without_magics(code: str) -> str:
    # IPython's %magic and !shell lines are not Python; blank lines in their place keep the line numbers.
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines())


def notebook_source(path: Path) -> Source:
    label = shown(path)
    parts = []
    for number, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] == "code":
            code = without_magics("".join(cell["source"]))
            parts.append(Part(label, number, ast.parse(code, filename=f"{label} cell {number}")))
    return Source(None, None, tuple(parts))


def synthetic_source(code: str) -> Source:
    return Source(None, None, (Part("synthetic.py", None, ast.parse(code)),))


def course_sources() -> list[Source]:
    return ([python_source(path) for path in sorted(HELPERS.rglob("*.py"))]
            + [notebook_source(path) for path in NOTEBOOKS])


# --- Which names a file imports --------------------------------------------------------------------------------


def import_statements(tree: ast.Module, module_level_only: bool) -> list[ast.Import | ast.ImportFrom]:
    found, pending = [], [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            if not (module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))):
                pending.append(child)
    return sorted(found, key=lambda node: node.lineno)  # a later import of a name wins, as when the code runs


def imported_module(node: ast.ImportFrom, package: str | None) -> str:
    if not node.level:
        return node.module
    base = (package or "").split(".")[: len((package or "").split(".")) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imported_names(source: Source, module_level_only: bool = False) -> dict[str, str]:
    """Local name → dotted path: {"SFTConfig": "trl.SFTConfig", "trl": "trl", "Chroma": "langchain_chroma.Chroma"}."""
    names = {}
    for part in source.parts:
        for node in import_statements(part.tree, module_level_only):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]  # "import a.b" binds a; "import a.b as c" binds c to a.b
                    names[alias.asname or top] = alias.name if alias.asname else top
            else:
                module = imported_module(node, source.package)
                names.update({alias.asname or alias.name: f"{module}.{alias.name}" for alias in node.names
                              if alias.name != "*"})
    return names


def through_reexports(path: str, exports: dict[str, dict[str, str]]) -> str:
    """The path with each name a helpers module imports at module level replaced by what it imports:
    "helpers.training.SFTConfig" → "trl.SFTConfig"."""
    for _ in range(10):  # modules importing from one another cannot loop the reader
        segments = path.split(".")
        for cut in range(len(segments) - 1, 0, -1):
            module_exports = exports.get(".".join(segments[:cut]), {})
            if segments[cut] in module_exports:
                path = ".".join([module_exports[segments[cut]], *segments[cut + 1:]])
                break
        else:
            return path
    return path


def library_of(path: str) -> str | None:
    top = path.split(".")[0]
    if top.startswith("langchain"):
        return "langchain"
    return top if top in LIBRARIES else None


# --- Finding the library calls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyword:
    name: str
    where: str


@dataclass(frozen=True)
class LibraryCall:
    target: str  # dotted path of the library callable
    where: str
    keywords: tuple[Keyword, ...]
    builder: str | None = None  # the KEYWORD_BUILDERS entry the keywords come from


def attribute_chain(node: ast.expr) -> list[str] | None:
    """["client", "chat", "completions", "create"] for client.chat.completions.create; None for a call on a value."""
    attributes = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    return [node.id, *reversed(attributes)] if isinstance(node, ast.Name) else None


def is_named(variable: str, name: str) -> bool:
    return variable == name or variable.endswith("_" + name)


def instance_target(chain: list[str], imported_packages: set[str]) -> str | None:
    for variable, method, target, needs in INSTANCE_CALLS:
        called = method.split(".") if method else []
        if len(chain) > len(called) and chain[len(chain) - len(called):] == called \
                and is_named(chain[-len(called) - 1], variable) and (needs is None or needs in imported_packages):
            return target
    return None


def call_target(func: ast.expr, names: dict[str, str], exports: dict[str, dict[str, str]]) -> str | None:
    chain = attribute_chain(func)
    if chain is None:
        return None
    if chain[0] in names:
        path = through_reexports(".".join([names[chain[0]], *chain[1:]]), exports)
        return path if library_of(path) else None
    return instance_target(chain, {path.split(".")[0] for path in names.values()})


def library_calls(source: Source, exports: dict[str, dict[str, str]]) -> list[LibraryCall]:
    names = imported_names(source)
    calls = []
    for part in source.parts:
        for node in ast.walk(part.tree):
            target = call_target(node.func, names, exports) if isinstance(node, ast.Call) else None
            if target:
                keywords = tuple(Keyword(keyword.arg, part.at(keyword.lineno)) for keyword in node.keywords
                                 if keyword.arg is not None)
                calls.append(LibraryCall(target, part.at(node.lineno), keywords))
    return calls


def is_dict(node: ast.expr) -> bool:
    return isinstance(node, ast.Dict) or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                                          and node.func.id == "dict")


def dict_keys(node: ast.expr, part: Part) -> list[Keyword]:
    """The top-level keys of dict(a=...) or {"a": ...} (not those of dicts nested in it)."""
    if isinstance(node, ast.Dict):
        return [Keyword(key.value, part.at(key.lineno)) for key in node.keys
                if isinstance(key, ast.Constant) and isinstance(key.value, str)]
    if is_dict(node):
        return [Keyword(keyword.arg, part.at(keyword.lineno)) for keyword in node.keywords if keyword.arg]
    return []


def builder_keywords(definition: ast.stmt, part: Part) -> list[Keyword]:
    """A dict constant's keys, or what a function puts in the dict it returns: dict(...), .update(...), d["k"] = ."""
    if isinstance(definition, ast.Assign):
        return dict_keys(definition.value, part)
    nodes = list(ast.walk(definition))
    returns = [node.value for node in nodes if isinstance(node, ast.Return) and node.value is not None]
    returned = {value.id for value in returns if isinstance(value, ast.Name)}
    keywords = [keyword for value in returns for keyword in dict_keys(value, part)]
    for node in nodes:
        if isinstance(node, ast.Assign) and attribute_chain(node.targets[0]) in ([name] for name in returned):
            keywords += dict_keys(node.value, part)
        if isinstance(node, ast.Call) and attribute_chain(node.func) in ([name, "update"] for name in returned):
            keywords += [Keyword(keyword.arg, part.at(keyword.lineno)) for keyword in node.keywords if keyword.arg]
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript) \
                and attribute_chain(node.targets[0].value) in ([name] for name in returned) \
                and isinstance(node.targets[0].slice, ast.Constant):
            keywords.append(Keyword(node.targets[0].slice.value, part.at(node.lineno)))
    return keywords


def defined_name(statement: ast.stmt) -> str | None:
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return statement.name
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
        return statement.targets[0].id
    return None


def builder_calls(sources: list[Source]) -> list[LibraryCall]:
    return [LibraryCall(KEYWORD_BUILDERS[name], part.at(statement.lineno), tuple(builder_keywords(statement, part)),
                        builder=name)
            for source in sources for part in source.parts for statement in part.tree.body
            if (name := defined_name(statement)) in KEYWORD_BUILDERS]


def all_library_calls(sources: list[Source]) -> list[LibraryCall]:
    exports = {source.module: imported_names(source, module_level_only=True) for source in sources if source.module}
    return [call for source in sources for call in library_calls(source, exports)] + builder_calls(sources)


# --- What the installed libraries accept -----------------------------------------------------------------------


@cache
def resolve(path: str):
    """The object a dotted path names, importing modules as needed (getattr first: transformers' names are lazy)."""
    segments = path.split(".")
    found = importlib.import_module(segments[0])
    for depth, segment in enumerate(segments[1:], start=2):
        try:
            found = getattr(found, segment)
        except AttributeError:
            found = import_submodule(found, ".".join(segments[:depth]))
    return found


def import_submodule(parent, dotted: str):
    """The submodule ``dotted`` of the module ``parent`` (``chromadb.config``, ``langchain_core.indexing``)."""
    if not inspect.ismodule(parent):
        raise AttributeError(f"{dotted.rpartition('.')[0]} has no attribute {dotted.rpartition('.')[2]!r}")
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as error:
        if error.name != dotted:  # the submodule exists but needs something that is not installed
            raise
        raise AttributeError(f"module {parent.__name__} has no attribute or submodule "
                             f"{dotted.rpartition('.')[2]!r}") from None


@dataclass(frozen=True)
class Parameters:
    names: frozenset[str]
    more: bool  # it also takes **kwargs


def signature_parameters(function) -> Parameters:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: nothing can be said
        return Parameters(frozenset(), more=True)
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return Parameters(frozenset(name for name, parameter in signature.parameters.items() if parameter.kind in by_name),
                      more=any(parameter.kind is inspect.Parameter.VAR_KEYWORD
                               for parameter in signature.parameters.values()))


def pydantic_parameters(model) -> Parameters:
    names = set(signature_parameters(model).names)
    for name, field in model.model_fields.items():
        names.add(name)
        for alias in (field.alias, field.validation_alias):
            names.update([alias] if isinstance(alias, str) else
                         [choice for choice in getattr(alias, "choices", ()) if isinstance(choice, str)])
    return Parameters(frozenset(names), more=False)


def constructor_parameters(cls) -> Parameters:
    """A class's constructor keywords; an __init__ that takes **kwargs is taken to pass them to its parent's."""
    own = signature_parameters(cls)
    if not own.more:
        return own
    names = set(own.names)
    for klass in cls.__mro__[:-1]:  # object's __init__ takes nothing
        if "__init__" in vars(klass):
            parameters = signature_parameters(vars(klass)["__init__"])
            names |= parameters.names
            if not parameters.more:
                return Parameters(frozenset(names), more=False)
    return Parameters(frozenset(names), more=True)


@cache
def parameters_of(path: str) -> Parameters:
    if path.endswith("()"):
        return Parameters(frozenset(vars(resolve(path[:-2])())), more=False)
    target = resolve(path)
    if inspect.isclass(target) and isinstance(getattr(target, "model_fields", None), dict):
        return pydantic_parameters(target)
    if inspect.isclass(target) and dataclasses.is_dataclass(target):
        own = signature_parameters(target)
        fields = {field.name for field in dataclasses.fields(target) if field.init}
        return Parameters(own.names | fields, own.more)
    if inspect.isclass(target):
        return constructor_parameters(target)
    return signature_parameters(target)


def resolves_to(path: str, found) -> bool:
    try:
        return resolve(path) == found
    except (ImportError, AttributeError):  # a stale table entry: test_every_table_entry_names_an_installed_callable
        return False


def table_entry(table, target: str):
    """The table's key naming the same object as ``target`` (however the course spells it), or None."""
    found = resolve(target)
    return next((key for key in table if key == target or resolves_to(key, found)), None)


def judge(keyword: str, target: str) -> tuple[str, str]:
    """(ACCEPTED, DRIFT or UNVERIFIABLE, why)."""
    if table_entry(ANY_KEYWORD, target):
        return ACCEPTED, "any name is a step"
    own = parameters_of(target)
    if keyword in own.names:
        return ACCEPTED, "a parameter"
    if not own.more:
        return DRIFT, f"not a parameter of {target}"
    forwards, complete = FORWARDS.get(table_entry(FORWARDS, target), ((), False))
    taken_by = [forward for forward in forwards if keyword in parameters_of(forward).names]
    if taken_by:
        return ACCEPTED, f"taken by {taken_by[0]}"
    if forwards and complete:
        return DRIFT, f"{target} passes **kwargs on to {' / '.join(forwards)}, and none of them takes it"
    if forwards:
        return UNVERIFIABLE, f"{target} passes **kwargs on to {' / '.join(forwards)}, which take **kwargs too"
    return UNVERIFIABLE, f"{target} accepts **kwargs"


@dataclass(frozen=True)
class Verdict:
    call: LibraryCall
    keyword: Keyword | None  # None: the callable itself is gone
    outcome: str
    reason: str

    def __str__(self) -> str:
        if self.keyword is None:
            return f"{self.call.where}: {self.call.target} no longer exists ({self.reason})"
        via = f" (a key of {self.call.builder}, splatted into it)" if self.call.builder else ""
        return f"{self.keyword.where}: keyword {self.keyword.name!r} of {self.call.target}{via}: {self.reason}"


def check(call: LibraryCall) -> list[Verdict]:
    try:
        resolve(call.target)
    except (ImportError, AttributeError) as error:
        return [Verdict(call, None, DRIFT, f"{type(error).__name__}: {error}")]
    verdicts = []
    for keyword in call.keywords:
        try:
            outcome, reason = judge(keyword.name, call.target)
        except (ImportError, AttributeError) as error:  # a FORWARDS target that is gone is drift as well
            outcome, reason = DRIFT, f"cannot be checked: {type(error).__name__}: {error}"
        verdicts.append(Verdict(call, keyword, outcome, reason))
    return verdicts


def checked(sources: list[Source]) -> tuple[list[LibraryCall], list[Verdict]]:
    calls = all_library_calls(sources)
    return calls, [verdict for call in calls for verdict in check(call)]


def drift_report(verdicts: list[Verdict]) -> list[str]:
    return [str(verdict) for verdict in verdicts if verdict.outcome == DRIFT]


# --- Tests -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unsloth_first():
    """Every check sees the libraries as the notebooks do: Unsloth imported first, patching TRL and transformers."""
    import helpers.models  # noqa: F401


@pytest.fixture(scope="module")
def course(unsloth_first):
    return checked(course_sources())


@pytest.mark.parametrize("library", LIBRARIES)
def test_every_keyword_the_course_passes_exists_in_the_installed_library(course, library):
    _, verdicts = course
    drifted = drift_report([verdict for verdict in verdicts if library_of(verdict.call.target) == library])
    assert not drifted, f"{len(drifted)} call(s) of the course no longer match the installed {library}:\n" + \
        "\n".join(drifted)


def test_the_guard_finds_the_calls_the_course_is_built_on(course):
    calls, verdicts = course
    targets = {call.target for call in calls}
    missed = [target for target in MUST_FIND if target not in targets]
    assert not missed, f"the reader found no call of {missed}, which the course makes"
    unread = set(KEYWORD_BUILDERS) - {call.builder for call in calls if call.builder and call.keywords}
    assert not unread, f"no helpers module defines {sorted(unread)} with keys any more: update KEYWORD_BUILDERS"
    notebooks = {Path(call.where.split(" ")[0]).stem for call in calls if call.where.startswith("notebooks/")}
    assert set(NOTEBOOKS_CALLING_LIBRARIES) <= notebooks, f"library calls found only in the notebooks {notebooks}"
    calls_per_library = Counter(library_of(call.target) for call in calls)
    keywords_per_library = Counter(library_of(verdict.call.target) for verdict in verdicts if verdict.keyword)
    print(f"\n{len(calls)} library calls, {sum(keywords_per_library.values())} keywords checked:")
    for library in LIBRARIES:
        print(f"  {library:22} {calls_per_library[library]:3} calls  {keywords_per_library[library]:3} keywords")
    assert len(calls) >= 60 and sum(keywords_per_library.values()) >= 120


def test_keywords_that_only_kwargs_accept_are_listed(course):
    _, verdicts = course
    unverified = defaultdict(list)
    for verdict in verdicts:
        if verdict.outcome == UNVERIFIABLE:
            unverified[(verdict.keyword.name, verdict.call.target, verdict.reason)].append(verdict.keyword.where)
    print(f"\n{len(unverified)} keyword(s) not verified (they go into **kwargs):")
    for (keyword, target, reason), places in sorted(unverified.items()):
        print(f"  {keyword!r} of {target}: {reason}; at {', '.join(places)}")


def test_every_table_entry_names_an_installed_callable(unsloth_first):
    paths = {target for _, _, target, _ in INSTANCE_CALLS} | set(ANY_KEYWORD) | set(KEYWORD_BUILDERS.values()) | \
        set(FORWARDS) | {forward for forwards, _ in FORWARDS.values() for forward in forwards}
    gone = []
    for path in sorted(paths):
        try:
            resolve(path.removesuffix("()"))
        except (ImportError, AttributeError) as error:
            gone.append(f"{path}: {type(error).__name__}: {error}")
    assert not gone, "table entries of this test that the installed libraries no longer have:\n" + "\n".join(gone)


MISSPELLED = '''
from trl import SFTConfig
from unsloth import FastLanguageModel

config = SFTConfig(output_dir="out", num_train_epoch=1)
model = FastLanguageModel.get_peft_model(model, r=16, rr=16)
reply = client.chat.completions.create(model="fine-tuned", mesages=[])
FastLanguageModel.for_inferense(model)


def generation_arguments():
    arguments = dict(max_new_token=5)
    arguments.update(do_sample=False)
    return arguments
'''

CORRECT = '''
import trl
from unsloth import FastLanguageModel

config = trl.SFTConfig(output_dir="out", num_train_epochs=1)
model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16)
reply = client.chat.completions.create(model="fine-tuned", messages=[])
output = tuned_model.generate(max_new_tokens=5, do_sample=False)
'''


def test_a_misspelled_keyword_or_name_is_reported_by_name_and_line(unsloth_first):
    _, verdicts = checked([synthetic_source(MISSPELLED)])
    report = drift_report(verdicts)
    assert len(report) == 5, "\n".join(report)
    assert any(line.startswith("synthetic.py:5: keyword 'num_train_epoch' of trl.SFTConfig") for line in report)
    assert any(line.startswith("synthetic.py:6: keyword 'rr' of unsloth.FastLanguageModel.get_peft_model")
               for line in report)
    assert any("'mesages' of openai.resources.chat.completions.Completions.create" in line for line in report)
    assert "synthetic.py:8: unsloth.FastLanguageModel.for_inferense no longer exists (AttributeError: " \
        "unsloth.FastLanguageModel has no attribute 'for_inferense')" in report
    assert any("synthetic.py:12: keyword 'max_new_token' of transformers.GenerationMixin.generate (a key of "
               "generation_arguments" in line for line in report)
    print("\n" + "\n".join(report))


def test_correct_keywords_are_not_reported(unsloth_first):
    calls, verdicts = checked([synthetic_source(CORRECT)])
    assert len(calls) == 4
    assert [verdict.outcome for verdict in verdicts] == [ACCEPTED] * 8, "\n".join(map(str, verdicts))


def test_a_notebook_keyword_is_located_by_cell_and_line_with_imports_from_an_earlier_cell(unsloth_first, tmp_path):
    # max_seq_length: SFTConfig's name before TRL 0.20 renamed it max_length, as old tutorials still write it.
    cells = [{"cell_type": "markdown", "source": ["# Fine-tuning"]},
             {"cell_type": "code", "source": ["%pip install trl\n", "!nvidia-smi\n", "from trl import SFTConfig"]},
             {"cell_type": "code",
              "source": ["config = SFTConfig(\n", "    output_dir='out',\n", "    max_seq_length=64,\n)"]}]
    notebook = tmp_path / "99_old_tutorial.ipynb"
    notebook.write_text(json.dumps({"cells": cells}))
    _, verdicts = checked([notebook_source(notebook)])
    assert drift_report(verdicts) == [f"{notebook} cell 2 line 3: keyword 'max_seq_length' of trl.SFTConfig: "
                                      "not a parameter of trl.SFTConfig"]


def test_a_library_name_reexported_by_a_helpers_module_is_checked(unsloth_first):
    stage = Source("helpers.stage", "helpers",
                   (Part("src/helpers/stage.py", None, ast.parse("from trl import SFTConfig")),))
    notebook = synthetic_source("import helpers\n"
                                "from helpers.stage import SFTConfig as Config\n"
                                "Config(num_train_epoch=1)\n"
                                "helpers.stage.SFTConfig(num_train_epochs=1)\n")
    calls, verdicts = checked([stage, notebook])
    assert [call.target for call in calls] == ["trl.SFTConfig", "trl.SFTConfig"]
    assert drift_report(verdicts) == ["synthetic.py:3: keyword 'num_train_epoch' of trl.SFTConfig: "
                                      "not a parameter of trl.SFTConfig"]
