"""Model failures, each carrying a short text that is safe to show in the chat."""

from __future__ import annotations


class ModelError(Exception):
    """A generation failed. ``user_message`` is what the person chatting is told."""

    user_message = "The model couldn't answer just now. Please try again in a moment."

    def __init__(self, detail: str, *, user_message: str | None = None) -> None:
        super().__init__(detail)
        if user_message is not None:
            self.user_message = user_message


class ModelNotFound(ModelError):
    """The persona's model is not installed on any server."""

    def __init__(self, model: str, detail: str | None = None) -> None:
        super().__init__(
            detail or f"model {model!r} not found",
            user_message=(
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
