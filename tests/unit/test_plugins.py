"""Plugins in one process: what a plugin may register, every way it can go wrong, and where its configs go."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.errors import ConfigError, PluginError
from dlrun.models.layers import LAYERS
from dlrun.plugin_loading import ENV, check_recorded, load_plugins, recorded_plugins, unload_plugins, use_plugins

LAYER_PLUGIN = """
    from dlrun import plugins

    @plugins.layer("{name}", "Multiply by a factor")
    def times(ctx, in_shape, factor: float = 2.0):
        from torch import nn

        class Times(nn.Module):
            def forward(self, x):
                return x * factor

        return Times()
"""


@pytest.fixture(autouse=True)
def no_plugins_left(monkeypatch, workdir):
    """Each test starts and ends with no plugin loaded, none installed (whatever this environment has),
    $DLRUN_PLUGINS unset and an empty folder."""
    from importlib import metadata

    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(metadata, "entry_points", lambda group: [])
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))  # what completion remembers stays here
    unload_plugins()
    yield
    unload_plugins()
    for name in [m for m in sys.modules if m.split(".")[0] in ("pkg_plugin", "brokenpkg")]:
        del sys.modules[name]


def write_package(root, name: str, files: dict[str, str]):
    """A package on sys.path (for the test only) holding `files`."""
    for relative, source in files.items():
        path = root / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    sys.path.insert(0, str(root))


def write(folder, name: str, source: str):
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def test_a_file_plugin_registers_a_layer_that_configs_name_and_did_you_mean_knows(workdir):
    plugin = write(workdir, "my_layers.py", LAYER_PLUGIN.format(name="times"))
    (loaded,) = use_plugins([str(plugin)])
    assert (loaded.name, loaded.kind, loaded.registered) == ("my_layers", "file", [("layer type", "times")])
    assert loaded.version.startswith("sha256:")
    assert os.environ[ENV] == str(plugin.resolve())  # passed on to the processes dlrun starts
    run = validate(compose(["data=iris", "model.layers=[{type: times, factor: 3.0}, {type: linear}]"]))
    assert run.config["model"]["layers"][0]["type"] == "times"
    with pytest.raises(ConfigError, match="Did you mean 'times'"):
        LAYERS.get("timess")


def test_the_environment_variable_loads_a_plugin(workdir, monkeypatch):
    monkeypatch.setenv(ENV, str(write(workdir, "env_layers.py", LAYER_PLUGIN.format(name="env_times"))))
    assert [p.name for p in load_plugins()] == ["env_layers"]
    assert "env_times" in LAYERS.names()


@pytest.mark.parametrize("source, message", [
    ("import not_a_module_anywhere\n", "the plugin 'broken' .* failed to import: ModuleNotFoundError"),
    (LAYER_PLUGIN.format(name="linear"), "registers the layer type 'linear', which is one of dlrun's own"),
    (LAYER_PLUGIN.format(name="twice") + LAYER_PLUGIN.format(name="twice"), "registers the layer type .twice. twice"),
    ("from dlrun import plugins\n\n@plugins.loss('no_fit', 'A loss without fits')\ndef f(n):\n    pass\n",
     "failed to import: TypeError: .*fits"),
    ("from dlrun import plugins\n\n@plugins.optimizer('opt', 'Defaults in the signature')\n"
     "def opt(parameters, lr: float = 0.1):\n    pass\n", "defaults belong in its YAML file"),
    ("from dlrun import plugins\nplugins.config_dir('no_such_folder')\n", "names the config folder .* does not exist"),
])
def test_a_plugin_that_cannot_load_is_an_error_naming_it_and_the_fix(workdir, source, message):
    plugin = write(workdir, "broken.py", source)
    with pytest.raises(PluginError, match=message):
        use_plugins([str(plugin)])


def test_two_plugins_registering_one_name_are_refused(workdir):
    first = write(workdir, "first.py", LAYER_PLUGIN.format(name="shared"))
    second = write(workdir, "second.py", LAYER_PLUGIN.format(name="shared"))
    with pytest.raises(PluginError, match="the plugin 'second' registers the layer type 'shared', which the plugin "
                                          "'first' registered already"):
        use_plugins([str(first), str(second)])


def test_a_missing_file_or_module_is_named(workdir):
    with pytest.raises(PluginError, match="nowhere.py': no file there"):
        use_plugins(["nowhere.py"])
    with pytest.raises(PluginError, match="plugin 'no_such_module_here': no module of that name"):
        use_plugins(["no_such_module_here"])


def test_registering_outside_a_plugin_import_is_refused():
    from dlrun import plugins

    with pytest.raises(PluginError, match="outside a plugin's import"):
        plugins.layer("stray", "Registered by a plain import")


def test_a_plugin_config_tree_joins_the_search_path_after_the_user_and_before_the_package(workdir):
    tree = workdir / "plugin_conf"
    (tree / "model").mkdir(parents=True)
    (tree / "model" / "wide_mlp.yaml").write_text("# From the plugin\nlayers:\n  - {type: linear, out_features: 8}\n"
                                                  "  - {type: activation}\n  - {type: linear}\n")
    write(workdir, "tree_plugin.py", f"from dlrun import plugins\nplugins.config_dir({str(tree)!r})\n")
    use_plugins([str(workdir / "tree_plugin.py")])
    assert validate(compose(["data=iris", "model=wide_mlp"])).config["model"]["layers"][0]["out_features"] == 8
    (workdir / "conf" / "model").mkdir(parents=True)  # the user's own ./conf shadows the plugin's option
    (workdir / "conf" / "model" / "wide_mlp.yaml").write_text("layers:\n  - {type: linear}\n")
    assert len(validate(compose(["data=iris", "model=wide_mlp"])).config["model"]["layers"]) == 1
    from dlrun.catalog import list_groups

    assert "[plugin tree_plugin]" not in list_groups("model")  # ./conf's file wins, and is listed
    (workdir / "conf" / "model" / "wide_mlp.yaml").unlink()
    assert "[plugin tree_plugin]" in list_groups("model")


def test_a_plugin_option_may_not_replace_one_of_dlruns(workdir):
    tree = workdir / "plugin_conf"
    (tree / "model").mkdir(parents=True)
    (tree / "model" / "cnn.yaml").write_text("layers: []\n")
    write(workdir, "shadow.py", f"from dlrun import plugins\nplugins.config_dir({str(tree)!r})\n")
    with pytest.raises(PluginError, match="ships the option model=cnn, which is one of dlrun's own"):
        use_plugins([str(workdir / "shadow.py")])


def test_a_config_cannot_load_a_plugin(workdir):
    with pytest.raises(ConfigError, match="unknown config key 'plugins'"):
        validate(compose(["data=iris", "+plugins=[my_layers.py]"]))


def test_a_run_records_its_plugins_and_a_stored_run_is_checked_against_those_loaded(workdir):
    plugin = write(workdir, "recorded.py", LAYER_PLUGIN.format(name="recorded_times"))
    use_plugins([str(plugin)])
    tag = recorded_plugins()
    (record,) = json.loads(tag)
    assert record["name"] == "recorded" and record["source"] == str(plugin.resolve())
    assert check_recorded(tag, "r1") == []
    plugin.write_text(plugin.read_text() + "# changed\n")
    unload_plugins()
    use_plugins([str(plugin)])
    ((what, then, now),) = check_recorded(tag, "r1")
    assert what == "plugin recorded" and then == record["version"] and now != then
    unload_plugins()  # and $DLRUN_PLUGINS as it was
    with pytest.raises(PluginError, match=f"run r1 was trained with the plugin 'recorded' .* not loaded here: name "
                                          f"it: --plugin '{plugin.resolve()}'"):
        check_recorded(tag, "r1")


def test_a_metric_that_does_not_fit_the_task_is_refused_before_the_run(workdir):
    from dlrun.training.setup import prepare

    with pytest.raises(ConfigError, match="the metric 'rmse' in metrics fits regression data"):
        prepare(validate(compose(["data=iris", "metrics=[rmse]"])))
    with pytest.raises(ConfigError, match="unknown metric 'ff1'.*Did you mean 'f1'"):
        validate(compose(["data=iris", "metrics=[ff1]"]))


def test_a_plugin_that_failed_is_retried_once_fixed_and_leaves_nothing_behind(workdir):
    plugin = write(workdir, "flaky.py", textwrap.dedent(LAYER_PLUGIN.format(name="flaky_times")) + "raise RuntimeError('not yet')\n")
    with pytest.raises(PluginError, match="not yet"):
        use_plugins([str(plugin)])
    assert "flaky_times" not in LAYERS.names() and ENV not in os.environ  # nothing registered, nothing passed on
    plugin.write_text(textwrap.dedent(LAYER_PLUGIN.format(name="flaky_times")))
    assert [p.name for p in use_plugins([str(plugin)])] == ["flaky"]
    assert "flaky_times" in LAYERS.names()


def test_one_plugin_named_two_ways_is_loaded_once(workdir, monkeypatch):
    from importlib.metadata import EntryPoint
    from importlib import metadata

    plugin = write(workdir, "twice_named.py", LAYER_PLUGIN.format(name="twice_named"))
    monkeypatch.setenv(ENV, "twice_named.py")  # relative here, absolute on the command line
    assert [p.name for p in use_plugins([str(plugin)])] == ["twice_named"]
    unload_plugins()
    monkeypatch.delenv(ENV)
    write_package(workdir / "site", "pkg_plugin", {"__init__.py": LAYER_PLUGIN.format(name="pkg_times")})
    monkeypatch.setattr(metadata, "entry_points", lambda group: [EntryPoint("pkg", "pkg_plugin", group)])
    assert [(p.name, p.kind) for p in use_plugins(["pkg_plugin"])] == [("pkg", "entry point")]


def test_a_package_plugin_whose_files_change_is_drift_even_at_the_same_version(workdir):
    write_package(workdir / "site", "pkg_plugin", {"__init__.py": "from pkg_plugin import layers\n",
                                                     "layers.py": LAYER_PLUGIN.format(name="pkg_layer")})
    use_plugins(["pkg_plugin"])
    tag = recorded_plugins()
    unload_plugins()
    (workdir / "site" / "pkg_plugin" / "layers.py").write_text(textwrap.dedent(LAYER_PLUGIN.format(name="pkg_layer"))
                                                               + "# changed\n")
    use_plugins(["pkg_plugin"])
    ((what, _, _),) = check_recorded(tag, "r1")
    assert what.startswith("plugin pkg_plugin")


def test_a_module_plugin_whose_package_fails_is_named_without_a_traceback(workdir):
    write_package(workdir / "site", "brokenpkg", {"__init__.py": "raise RuntimeError('package broken')\n",
                                                    "sub.py": ""})
    with pytest.raises(PluginError, match="the plugin 'brokenpkg.sub' .* failed to import: RuntimeError: package broken"):
        use_plugins(["brokenpkg.sub"])


def test_a_stored_run_never_makes_dlrun_import_what_its_tag_names(workdir):
    marker = workdir / "imported"
    evil = write(workdir, "evil.py", f"open({str(marker)!r}, 'w').close()\n")
    tag = json.dumps([{"name": "evil", "version": "1", "source": str(evil), "kind": "file"},
                      {"name": "os_system", "version": "1", "source": "os", "kind": "module",
                       "distribution": "x; rm -rf /"}])
    with pytest.raises(PluginError, match="plugin 'evil'") as raised:
        check_recorded(tag, "r1")
    assert not marker.exists()
    with pytest.raises(PluginError) as raised:
        check_recorded(json.dumps(json.loads(tag)[1:]), "r1")
    assert "pip install x" not in str(raised.value)  # not a distribution name: not offered as a command


@pytest.mark.parametrize("source, message", [
    ("from dlrun import plugins\n\n@plugins.metric('loss', 'Shadow', fits={'classification'}, higher_is_better=True)"
     "\ndef m(ctx):\n    pass\n", "the metric 'loss' is one every run logs already"),
    ("from __future__ import annotations\nfrom dlrun import plugins\n\n@plugins.layer('hinted', 'Bad hint')\n"
     "def hinted(ctx, in_shape, size: NotImported = 1):\n    pass\n", "annotations cannot be read .*NotImported"),
])
def test_a_registration_that_would_fail_later_is_refused_when_the_plugin_loads(workdir, source, message):
    with pytest.raises(PluginError, match=message):
        use_plugins([str(write(workdir, "late.py", source))])


def test_a_plugin_metric_that_is_not_a_torchmetrics_metric_is_named(workdir):
    from dlrun.training.setup import prepare

    use_plugins([str(write(workdir, "bad_metric.py", """
        from dlrun import plugins

        @plugins.metric("counter", "Not a torchmetrics.Metric", fits={"classification"}, higher_is_better=True)
        def counter(ctx):
            return object()
    """))])
    with pytest.raises(PluginError, match="the metric 'counter' \\(from the plugin 'bad_metric'\\) made a object"):
        prepare(validate(compose(["data=iris", "metrics=[counter]"])))


def test_a_plugin_metric_can_order_a_sweep_and_says_which_way_is_better(workdir):
    from dlrun.tuning.check import check_base

    use_plugins([str(write(workdir, "errors_metric.py", """
        from dlrun import plugins

        @plugins.metric("errors", "Misclassified share", fits={"classification"}, higher_is_better=False)
        def errors(ctx):
            import torchmetrics

            return torchmetrics.Accuracy(task="multiclass", num_classes=ctx.num_classes)
    """))])
    checked = check_base(["data=iris", "metrics=[errors, f1]"], None, "val/errors", None, "test")
    assert checked.direction == "minimize"
    assert check_base(["data=iris", "metrics=[f1]"], None, "val/f1", None, "test").direction == "maximize"
    with pytest.raises(ConfigError, match="metric 'val/errors' is not reported each epoch"):
        check_base(["data=iris"], None, "val/errors", None, "test")  # not among this run's metrics


def test_shell_completion_finds_an_installed_plugins_configs_once_dlrun_has_loaded_it(workdir, monkeypatch):
    from importlib.metadata import EntryPoint
    from importlib import metadata

    from dlrun.completion import ConfigTree

    tree = workdir / "pkg_conf"
    (tree / "model").mkdir(parents=True)
    (tree / "model" / "pkg_net.yaml").write_text("# The package's net\nwidth: 3\nlayers: []\n")
    write_package(workdir / "site", "pkg_plugin", {"__init__.py": f"from dlrun import plugins\nplugins.config_dir({str(tree)!r})\n"})
    installed = [EntryPoint("pkg", "pkg_plugin", "dlrun.plugins")]
    monkeypatch.setattr(metadata, "entry_points", lambda group: installed)
    assert "model=pkg_net" not in [v for v, _ in ConfigTree(None, []).candidates("model=")]  # never loaded yet
    load_plugins()
    assert [v for v, _ in ConfigTree(None, []).candidates("model=pkg")] == ["model=pkg_net"]
    assert [v for v, _ in ConfigTree(None, ["model=pkg_net"]).candidates("model.w")] == ["model.width=3"]
    installed.append(EntryPoint("other", "other_plugin", "dlrun.plugins"))  # installed since: folders unknown
    assert [v for v, _ in ConfigTree(None, []).candidates("model=pkg")] == []
