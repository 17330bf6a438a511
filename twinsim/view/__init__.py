"""The twin a person can watch: its state over time (timeline), recorded from what the procedure read, and a web
view of it (viser) live or in replay. Nothing here reads the simulated room."""
