"""Front ends over the study engine and single runs behind the CLI: ``train`` (one victim) and ``evaluate-attack``
(a poisoned dataset as one row of a poisoning study)."""
