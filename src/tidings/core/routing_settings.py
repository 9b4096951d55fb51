"""Settings of topic routing (tidings.routing): ``TIDINGS_ROUTING__*`` or ``[routing]``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RoutingSettings(BaseModel):
    """How producers keep their copy of the rule set, and how much history is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: bool = Field(True, description="reload the rules when told of a change "
                                           "(pub/sub); off: at the next publish")
    history: int = Field(100, ge=1, le=100_000, description="rule set versions kept")
    topic_cache: int = Field(10_000, ge=0, description="topics whose matches are cached")
