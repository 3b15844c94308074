"""The MLflow pyfunc model of an SOO model (MLflow "models from code": nothing is pickled).

Loaded by `mlflow.pyfunc.load_model("models:/<name>@<alias>")`, it loads the base model named in
its model config, puts the logged peft adapter on top, and answers prompts greedily:

    model.predict({"prompt": ["You are in a house together with burglar Bob. ..."]})
    -> ["I would point out the kitchen."]
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class SooPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        from soo.models import load_model

        config = context.model_config
        model, self.tokenizer = load_model(
            config["base"],
            dtype=config.get("dtype", "auto"),
            trust_remote_code=bool(config.get("trust_remote_code", False)),
            adapter=context.artifacts["adapter"],
        )
        self.model = model
        self.max_new_tokens = int(config.get("max_new_tokens", 75))
        self.chat = bool(config.get("chat_template", True))

    def predict(self, context, model_input, params=None):  # no hints: MLflow would validate
        from soo.generation import generate

        if hasattr(model_input, "to_dict"):  # a pandas DataFrame
            prompts = list(model_input["prompt"])
        elif isinstance(model_input, dict):
            prompts = list(model_input["prompt"])
        else:
            prompts = [str(p) for p in model_input]
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=int((params or {}).get("max_new_tokens", self.max_new_tokens)),
            chat=self.chat,
            desc="predict",
        )


mlflow.models.set_model(SooPyfunc())
