"""The AtomThink data engine on any model: LLM annotation of problems into AMATH-SFT / AMATH-PRM records.

``atomthink annotate`` (``research.annotate.cli``) runs :class:`~research.annotate.engine.Annotator` over a problems
file through an OpenAI-compatible endpoint, as a resumable batch (``research.annotate.batch``); see
``docs/data-engine.md``.
"""
