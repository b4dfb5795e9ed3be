"""No models of its own (fleet access is fleet.OperatorAccess). The module
exists so that Django sends this app's post_migrate, after every other app's
(it is installed last), when their permissions exist: see console.groups."""
