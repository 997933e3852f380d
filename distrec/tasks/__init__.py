"""One unit of work each, as the study engine runs it and the CLI calls it: craft an attack
(:mod:`~distrec.tasks.craft`), train a ranker and attack it (:mod:`~distrec.tasks.rank`)."""
