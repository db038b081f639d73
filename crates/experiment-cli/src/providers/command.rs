//! `command`: each row runs a command template through the core's subprocess runner; stdout is
//! the output. The same sweep machinery for experiments that are programs, not prompts.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fanout::{CancelToken, Command, Launcher, ProcessRunner, Sink, TaskError};

use super::{Answer, ModelInfo, Provider, Request};
use crate::shell_template::{Script, ShellTemplate};

#[derive(Debug, Clone)]
pub(crate) struct CommandProvider {
    template: Arc<ShellTemplate>,
    timeout: Duration,
    /// Where rows run, checked; until [`CommandProvider::place`] gives the allocation of
    /// `--slurm-mode packed`.
    launcher: Launcher,
    placed: Arc<OnceLock<Launcher>>,
    runner: ProcessRunner,
    /// What a `.env` file sets and the environment does not: the command sees it too.
    env: Arc<Vec<(String, String)>>,
}

impl CommandProvider {
    pub(crate) fn new(
        template: ShellTemplate,
        timeout: Duration,
        launcher: Launcher,
        env: Vec<(String, String)>,
    ) -> Self {
        CommandProvider {
            template: Arc::new(template),
            timeout,
            launcher,
            placed: Arc::default(),
            runner: ProcessRunner::new(),
            env: Arc::new(env),
        }
    }
}

impl CommandProvider {
    /// Rows run on `launcher` from now on (this provider and its copies): the allocation of
    /// `--slurm-mode packed`, asked for once the inputs are checked. Only the first call counts.
    pub(crate) fn place(&self, launcher: Launcher) {
        let _ = self.placed.set(launcher);
    }

    fn launcher(&self) -> &Launcher {
        self.placed.get().unwrap_or(&self.launcher)
    }

    /// The command of a row: the script and the variables holding its values (a placeholder
    /// printing a name no column gives is an error).
    pub(crate) fn script(&self, vars: &[(String, String)], model: &str) -> Result<Script, String> {
        self.template
            .render(vars, &[("provider", "command"), ("model", model)])
            .map(|(script, _)| script)
    }
}

impl Provider for CommandProvider {
    fn name(&self) -> &'static str {
        "command"
    }

    fn settings(&self) -> String {
        format!(
            "--command TEMPLATE, rendered per row with its variables and {{{{model}}}}, run with \
             sh -c ({})",
            match self.launcher() {
                Launcher::Local => "here".to_owned(),
                Launcher::Slurm(_) => "on Slurm, with srun".to_owned(),
                Launcher::Packed(a) => format!("on Slurm, in allocation {}", a.job_id()),
            }
        )
    }

    fn preview(&self, req: &Request<'_>) -> Result<String, String> {
        self.script(req.vars, req.model).map(|s| s.preview())
    }

    fn generate(&self, req: &Request<'_>, cancel: &CancelToken) -> Result<Answer, TaskError> {
        let script = self
            .script(req.vars, req.model)
            .map_err(TaskError::failed)?;
        let mut cmd = Command::shell(script.text);
        for (k, v) in self.env.iter().chain(&script.env) {
            cmd = cmd.env(k, v);
        }
        let cmd = cmd
            .launcher(self.launcher().clone())
            .job_name(format!("parallamr {}", req.model))
            .timeout(Some(self.timeout))
            .stdout(Sink::Capture {
                max_bytes: 1024 * 1024,
            })
            .stderr(Sink::tail());
        let out = self.runner.run(&cmd, cancel)?.into_result()?;
        if out.stdout.dropped_bytes > 0 {
            // Half an output written as `ok` would be worse than none.
            return Err(TaskError::failed(format!(
                "the command wrote more than 1 MiB ({} bytes); a row keeps at most 1 MiB: have \
                 it write large outputs to a file and print the file's name",
                out.stdout.dropped_bytes + out.stdout.bytes.len() as u64
            )));
        }
        Ok(Answer {
            text: out.stdout.text().trim_end().to_owned(),
            input_tokens: None,
            output_tokens: None,
        })
    }

    fn cache_endpoint(&self) -> Option<String> {
        None
    }

    fn context_window(&self, _model: &str) -> Result<Option<u64>, TaskError> {
        Ok(None)
    }

    fn models(&self) -> Result<Vec<ModelInfo>, TaskError> {
        Ok(Vec::new())
    }
}
