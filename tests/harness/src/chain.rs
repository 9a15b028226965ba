//! A libcni-like runner: executes a conflist's plugins the way containerd and podman do.
//!
//! Per plugin it derives stdin as libcni does (the plugin object plus `name`, `cniVersion`,
//! `prevResult`, and `runtimeConfig` for the capabilities the plugin declares), sets every
//! `CNI_*` variable (empty where not applicable), runs ADD and CHECK forward and DEL in reverse,
//! and stops at the first error. Plugins run in the calling thread's network namespace, so
//! call it through [`crate::netns::NetNs::run`] to act as a runtime inside a node namespace.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// A network configuration list.
#[derive(Debug, Clone)]
pub struct Conflist {
    /// `name`.
    pub name: String,
    /// `cniVersion` sent to every plugin.
    pub cni_version: String,
    /// The plugin objects.
    pub plugins: Vec<Value>,
}

/// One attachment's runtime parameters.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`, ...), passed to plugins that declare them.
    pub capability_args: Map<String, Value>,
}

/// A plugin that failed.
#[derive(Debug, Clone)]
pub struct PluginFailure {
    /// Plugin `type`.
    pub plugin: String,
    /// Exit code (-1 when killed by a signal).
    pub exit_code: i32,
    /// Its stdout (the CNI error object, normally).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plugin {} exited {}: stdout={} stderr={}",
            self.plugin,
            self.exit_code,
            self.stdout,
            self.stderr.trim()
        )
    }
}

/// What one plugin execution printed.
#[derive(Debug, Clone)]
pub struct Execution {
    /// Exit code.
    pub exit_code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
    /// Wall time of the exec.
    pub elapsed: Duration,
}

impl Execution {
    /// stdout parsed as JSON (`Null` when empty).
    pub fn json(&self) -> Value {
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.stdout)
                .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
        }
    }
}

/// Executes the plugin binary `plugin_type` (found in `cni_path`) once.
pub fn exec_plugin(
    plugin_type: &str,
    command: &str,
    attachment: &Attachment,
    cni_path: &str,
    stdin: &[u8],
) -> Execution {
    let binary = cni_path
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(plugin_type))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("plugin {plugin_type} not found in {cni_path}"));
    let cni_args = attachment
        .args
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let started = Instant::now();
    let mut child = Command::new(&binary)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &attachment.container_id)
        .env("CNI_NETNS", &attachment.netns)
        .env("CNI_IFNAME", &attachment.ifname)
        .env("CNI_ARGS", cni_args)
        .env("CNI_PATH", cni_path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let output = child.wait_with_output().expect("wait for plugin");
    Execution {
        exit_code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

impl Conflist {
    /// A conflist from its JSON text.
    pub fn from_json(text: &str) -> Conflist {
        let value: Value = serde_json::from_str(text).expect("conflist JSON");
        Conflist {
            name: value["name"].as_str().expect("conflist name").to_owned(),
            cni_version: value["cniVersion"]
                .as_str()
                .expect("conflist cniVersion")
                .to_owned(),
            plugins: value["plugins"]
                .as_array()
                .expect("conflist plugins")
                .clone(),
        }
    }

    /// The stdin libcni derives for `plugin`.
    pub fn plugin_config(
        &self,
        plugin: &Value,
        attachment: &Attachment,
        prev_result: Option<&Value>,
        with_runtime: bool,
    ) -> Value {
        let mut config = plugin.as_object().cloned().unwrap_or_default();
        config.insert("name".into(), json!(self.name));
        config.insert("cniVersion".into(), json!(self.cni_version));
        if let Some(prev) = prev_result {
            config.insert("prevResult".into(), prev.clone());
        }
        if with_runtime {
            let mut runtime = Map::new();
            if let Some(capabilities) = plugin.get("capabilities").and_then(Value::as_object) {
                for (capability, enabled) in capabilities {
                    if enabled.as_bool() == Some(true) {
                        if let Some(value) = attachment.capability_args.get(capability) {
                            runtime.insert(capability.clone(), value.clone());
                        }
                    }
                }
            }
            if !runtime.is_empty() {
                config.insert("runtimeConfig".into(), Value::Object(runtime));
            }
        }
        Value::Object(config)
    }

    fn run_one(
        &self,
        plugin: &Value,
        command: &str,
        attachment: &Attachment,
        stdin: &Value,
    ) -> Result<Execution, PluginFailure> {
        let plugin_type = plugin["type"].as_str().expect("plugin type");
        let bytes = serde_json::to_vec(stdin).expect("serialise stdin");
        let execution = exec_plugin(plugin_type, command, attachment, &crate::cni_path(), &bytes);
        if execution.exit_code == 0 {
            Ok(execution)
        } else {
            Err(PluginFailure {
                plugin: plugin_type.to_owned(),
                exit_code: execution.exit_code,
                stdout: execution.stdout,
                stderr: execution.stderr,
            })
        }
    }

    /// ADD through the chain; returns the final result (what libcni caches).
    pub fn add(&self, attachment: &Attachment) -> Result<Value, PluginFailure> {
        let mut prev: Option<Value> = None;
        for plugin in &self.plugins {
            let stdin = self.plugin_config(plugin, attachment, prev.as_ref(), true);
            prev = Some(self.run_one(plugin, "ADD", attachment, &stdin)?.json());
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL in reverse order, each plugin given the cached final result.
    pub fn del(
        &self,
        attachment: &Attachment,
        cached: Option<&Value>,
    ) -> Result<(), PluginFailure> {
        for plugin in self.plugins.iter().rev() {
            let stdin = self.plugin_config(plugin, attachment, cached, true);
            self.run_one(plugin, "DEL", attachment, &stdin)?;
        }
        Ok(())
    }

    /// CHECK forward, each plugin given the cached final result.
    pub fn check(&self, attachment: &Attachment, cached: &Value) -> Result<(), PluginFailure> {
        for plugin in &self.plugins {
            let stdin = self.plugin_config(plugin, attachment, Some(cached), true);
            self.run_one(plugin, "CHECK", attachment, &stdin)?;
        }
        Ok(())
    }

    /// GC: every plugin gets the valid attachments under both keys (libcni >= 1.2.1);
    /// continues past errors and returns them all.
    pub fn gc(&self, valid: &[(String, String)]) -> Vec<PluginFailure> {
        let list: Vec<Value> = valid
            .iter()
            .map(|(cid, ifname)| json!({"containerID": cid, "ifname": ifname}))
            .collect();
        let empty = Attachment::default();
        let mut failures = Vec::new();
        for plugin in &self.plugins {
            let mut stdin = self.plugin_config(plugin, &empty, None, false);
            stdin["cni.dev/valid-attachments"] = json!(list);
            stdin["cni.dev/attachments"] = json!(list);
            if let Err(f) = self.run_one(plugin, "GC", &empty, &stdin) {
                failures.push(f);
            }
        }
        failures
    }

    /// STATUS: stops at the first plugin that is not ready.
    pub fn status(&self) -> Result<(), PluginFailure> {
        let empty = Attachment::default();
        for plugin in &self.plugins {
            let stdin = self.plugin_config(plugin, &empty, None, false);
            self.run_one(plugin, "STATUS", &empty, &stdin)?;
        }
        Ok(())
    }
}
