"""Model failures, each carrying a short text that is safe to show in the chat."""

from __future__ import annotations


class ModelError(Exception):
    """A generation failed. ``user_message`` is what the person chatting is told.

    ``partial_status`` is how a reply that had already streamed some text is stored.
    """

    user_message = "The model couldn't answer just now. Please try again in a moment."
    partial_status = "interrupted"

    def marker(self) -> str:
        """What ends a partly streamed reply so the person sees it was cut short."""
        return f"\n\n[interrupted: {self.user_message}]"

    def __init__(self, detail: str, *, user_message: str | None = None) -> None:
        super().__init__(detail)
        if user_message is not None:
            self.user_message = user_message


class ModelNotFound(ModelError):
    """The persona's model is not installed on any server."""

    def __init__(
        self, model: str, detail: str | None = None, *, user_message: str | None = None
    ) -> None:
        super().__init__(
            detail or f"model {model!r} not found",
            user_message=user_message
            or (
                f"The model {model} isn't installed on this bot's machine; "
                f"an admin can run `ollama pull {model}`."
            ),
        )
        self.model = model


class ModelUnavailable(ModelError):
    """No server could be reached, or the backend is not loaded."""

    user_message = "The model is unavailable right now. Please try again in a minute."


class GenerationTimeout(ModelError):
    """No token within the first-token or idle timeout."""

    user_message = "The model took too long to answer. Please try again."


class ContextTooLong(ModelError):
    """The prompt does not fit the model's context window."""

    user_message = "That message is too long for this model. Please send something shorter."


class ReplyCut(ModelError):
    """The model stopped at its token limit (``max_tokens`` / ``num_predict``), mid-answer."""

    user_message = (
        "The answer hit the model's length limit before it was finished; "
        "ask it to continue or to be shorter."
    )
    partial_status = "cut"

    def marker(self) -> str:
        return " … [cut: max tokens]"


class ModelCrashed(ModelError):
    """The model's process died while answering (a native crash, the OOM killer, a kill)."""

    user_message = (
        "The model crashed while answering; the next message starts it again. Please try again."
    )
    partial_status = "failed"
