"""Errors in pipeline definitions, found before anything runs."""

from __future__ import annotations

from modelyard.errors import InvalidInputError, NotFoundError


class PipelineDefinitionError(InvalidInputError):
    """The pipeline's code is wrong: it names the pipeline, the task and the argument."""

    default_code = "pipeline/invalid"


class PipelineLoadError(InvalidInputError):
    default_code = "pipeline/load_failed"


class PipelineNotFoundError(NotFoundError):
    default_code = "pipeline/not_found"
