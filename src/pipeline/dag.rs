//! The job graph of a pipeline (petgraph): edges run from an upstream job to the jobs that
//! read it. Built only from validated inputs, so every edge names a real job; cycles are
//! rejected at construction with the full cycle path.

use std::collections::{BTreeSet, HashMap};

use petgraph::Direction;
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};

#[derive(Debug, Clone)]
pub struct JobDag {
    graph: DiGraph<String, ()>,
    by_name: HashMap<String, NodeIndex>,
    /// Jobs in an order where every job comes after all of its upstream jobs; ties keep
    /// declaration order so listings are stable.
    topological: Vec<String>,
}

impl JobDag {
    /// `jobs` in declaration order, each with the upstream jobs it reads.
    /// On a cycle, returns the cycle as a path that starts and ends on the same job.
    pub fn build(jobs: &[(String, Vec<String>)]) -> Result<Self, Vec<String>> {
        let mut graph = DiGraph::new();
        let mut by_name = HashMap::new();
        for (name, _) in jobs {
            by_name.insert(name.clone(), graph.add_node(name.clone()));
        }
        for (name, upstreams) in jobs {
            for upstream in upstreams {
                if let (Some(&from), Some(&to)) = (by_name.get(upstream), by_name.get(name)) {
                    graph.update_edge(from, to, ());
                }
            }
        }
        if toposort(&graph, None).is_err() {
            return Err(find_cycle(&graph));
        }
        let topological = stable_topological_order(&graph);
        Ok(JobDag {
            graph,
            by_name,
            topological,
        })
    }

    pub fn topological_order(&self) -> &[String] {
        &self.topological
    }

    pub fn contains(&self, job: &str) -> bool {
        self.by_name.contains_key(job)
    }

    /// Jobs `job` reads directly.
    pub fn upstream(&self, job: &str) -> Vec<String> {
        self.neighbors(job, Direction::Incoming)
    }

    /// Jobs that read `job` directly.
    pub fn downstream(&self, job: &str) -> Vec<String> {
        self.neighbors(job, Direction::Outgoing)
    }

    /// `jobs` plus everything they depend on, transitively.
    pub fn with_ancestors(&self, jobs: &[String]) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for job in jobs {
            if let Some(&start) = self.by_name.get(job) {
                let reversed = Reversed(&self.graph);
                let mut dfs = Dfs::new(reversed, start);
                while let Some(node) = dfs.next(reversed) {
                    found.insert(self.graph[node].clone());
                }
            }
        }
        found
    }

    /// `jobs` plus everything that depends on them, transitively.
    pub fn with_descendants(&self, jobs: &[String]) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for job in jobs {
            if let Some(&start) = self.by_name.get(job) {
                let mut dfs = Dfs::new(&self.graph, start);
                while let Some(node) = dfs.next(&self.graph) {
                    found.insert(self.graph[node].clone());
                }
            }
        }
        found
    }

    /// (upstream, downstream) pairs, in topological order of the downstream job.
    pub fn edges(&self) -> Vec<(String, String)> {
        self.topological
            .iter()
            .flat_map(|job| {
                self.upstream(job)
                    .into_iter()
                    .map(move |up| (up, job.clone()))
            })
            .collect()
    }

    fn neighbors(&self, job: &str, direction: Direction) -> Vec<String> {
        let Some(&node) = self.by_name.get(job) else {
            return Vec::new();
        };
        let mut names: Vec<(NodeIndex, String)> = self
            .graph
            .neighbors_directed(node, direction)
            .map(|n| (n, self.graph[n].clone()))
            .collect();
        names.sort();
        names.into_iter().map(|(_, name)| name).collect()
    }
}

/// Kahn's algorithm that always takes the earliest-declared ready job.
fn stable_topological_order(graph: &DiGraph<String, ()>) -> Vec<String> {
    let mut in_degree: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BTreeSet<NodeIndex> = graph
        .node_indices()
        .filter(|n| in_degree[n.index()] == 0)
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(node) = ready.pop_first() {
        order.push(graph[node].clone());
        for next in graph.neighbors_directed(node, Direction::Outgoing) {
            in_degree[next.index()] -= 1;
            if in_degree[next.index()] == 0 {
                ready.insert(next);
            }
        }
    }
    order
}

/// One message per cycle: `a → b → c → a`.
fn find_cycle(graph: &DiGraph<String, ()>) -> Vec<String> {
    let mut messages = Vec::new();
    for component in tarjan_scc(graph) {
        let is_cycle = component.len() > 1
            || component
                .first()
                .is_some_and(|&n| graph.contains_edge(n, n));
        if !is_cycle {
            continue;
        }
        let members: BTreeSet<NodeIndex> = component.iter().copied().collect();
        let Some(&start) = members.first() else {
            continue;
        };
        // Walk inside the component until a node repeats; the repeat closes a cycle.
        let mut path = vec![start];
        let mut current = start;
        // Every node of a strongly connected component has a successor inside it.
        while let Some(next) = graph
            .neighbors_directed(current, Direction::Outgoing)
            .filter(|n| members.contains(n))
            .min()
        {
            if let Some(position) = path.iter().position(|&n| n == next) {
                let mut cycle: Vec<&str> = path[position..]
                    .iter()
                    .map(|&n| graph[n].as_str())
                    .collect();
                cycle.push(graph[next].as_str());
                messages.push(format!("dependency cycle: {}", cycle.join(" → ")));
                break;
            }
            path.push(next);
            current = next;
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(spec: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        spec.iter()
            .map(|(name, ups)| {
                (
                    name.to_string(),
                    ups.iter().map(|u| u.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn orders_upstream_first_and_keeps_declaration_order() {
        let dag = JobDag::build(&jobs(&[
            ("weekly", &["daily"]),
            ("hourly", &[]),
            ("daily", &["hourly"]),
            ("other", &[]),
        ]))
        .unwrap();
        assert_eq!(
            dag.topological_order(),
            ["hourly", "daily", "weekly", "other"]
        );
        assert_eq!(dag.upstream("weekly"), ["daily"]);
        assert_eq!(dag.downstream("hourly"), ["daily"]);
        assert_eq!(
            dag.with_ancestors(&["weekly".into()])
                .into_iter()
                .collect::<Vec<_>>(),
            ["daily", "hourly", "weekly"]
        );
        assert_eq!(
            dag.with_descendants(&["daily".into()])
                .into_iter()
                .collect::<Vec<_>>(),
            ["daily", "weekly"]
        );
    }

    #[test]
    fn reports_the_cycle_path() {
        let err = JobDag::build(&jobs(&[
            ("a", &["c"]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
        ]))
        .unwrap_err();
        assert_eq!(err, vec!["dependency cycle: a → b → c → a".to_owned()]);
        let err = JobDag::build(&jobs(&[("self", &["self"])])).unwrap_err();
        assert_eq!(err, vec!["dependency cycle: self → self".to_owned()]);
    }
}
