import Foundation
import SafeTensors

/// A resumable training checkpoint: `checkpoint-<step>/` holding the PEFT adapter (loadable as is),
/// `optimizer.safetensors` (AdamW exp_avg / exp_avg_sq per adapter tensor) and `trainer_state.json`.
/// The directory is assembled under a temporary name and renamed, so a crash never leaves a
/// half-written checkpoint under the real name.
public enum TrainingCheckpoint {
    public static let optimizerFile = "optimizer.safetensors"
    public static let stateFile = "trainer_state.json"

    public static func directoryName(step: Int) -> String { "checkpoint-\(step)" }

    /// Writes `<output>/checkpoint-<step>` and returns its URL. `extraState` lands in trainer_state.json.
    @discardableResult
    public static func save(adapters: LoRAAdapters, step: Int, losses: [Double], into output: URL,
                            extraState: [String: JSONValue] = [:]) throws -> URL {
        let final = output.appendingPathComponent(directoryName(step: step))
        let temp = output.appendingPathComponent(".\(directoryName(step: step)).tmp-\(getpid())")
        let fm = FileManager.default
        try? fm.removeItem(at: temp)
        try fm.createDirectory(at: temp, withIntermediateDirectories: true)
        do {
            try PEFTAdapterIO.save(adapters, to: temp)
            let parameters = adapters.parameters
            var tensors: [(TensorEntry, Data)] = []
            for entry in parameters.entries {
                for (section, prefix) in [(2, "exp_avg."), (3, "exp_avg_sq.")] {
                    let data = parameters.values(entry, section: section).withUnsafeBufferPointer { Data(buffer: $0) }
                    tensors.append((TensorEntry(name: prefix + entry.key, dtype: .F32, shape: entry.shape), data))
                }
            }
            try SafeTensorsWriter.write(path: temp.appendingPathComponent(optimizerFile).path, tensors: tensors, metadata: ["format": "pt"])
            var state = extraState
            state["global_step"] = .int(step)
            state["log_history"] = .array(losses.enumerated().map { .dictionary(["step": .int($0.offset + 1), "loss": .number($0.element)]) })
            try AtomicFile.write(Data((PythonJSON.dumps(.dictionary(state)) + "\n").utf8), to: temp.appendingPathComponent(stateFile))
            // Saved again (a resume at the last step): the old one moves aside first, so either the
            // old or the new checkpoint is under the real name at every moment.
            AtomicFile.syncDirectory(temp)
            let old = output.appendingPathComponent(".\(directoryName(step: step)).old-\(getpid())")
            if fm.fileExists(atPath: final.path) { try? fm.removeItem(at: old); try fm.moveItem(at: final, to: old) }
            try fm.moveItem(at: temp, to: final)
            AtomicFile.syncDirectory(output)
            try? fm.removeItem(at: old)
        } catch {
            try? fm.removeItem(at: temp)
            // The user knows checkpoint-N, not the temporary directory it was assembled in.
            throw TrainError.checkpointNotWritten(path: final.path, reason: "\(error)")
        }
        return final
    }

    /// Loads adapter weights and optimizer state into `adapters` (built for training); returns the step
    /// and the recorded losses.
    /// `sameAs`: settings the checkpoint must have been trained with (what decides the data order); a
    /// key the checkpoint holds with another value is refused, a key it lacks (an older one) is not checked.
    public static func load(_ directory: URL, into adapters: LoRAAdapters,
                            sameAs expected: [String: JSONValue] = [:]) throws -> (step: Int, losses: [Double]) {
        let statePath = directory.appendingPathComponent(stateFile)
        guard let data = FileManager.default.contents(atPath: statePath.path), let state = try? JSONValue.parse(data: data).members,
              let step = state["global_step"]?.intValue else {
            throw TrainError.badCheckpoint(path: directory.path, reason: "missing or invalid \(stateFile)")
        }
        let differing = expected.keys.sorted().filter { key in state[key].map { $0 != expected[key]! } ?? false }
        if !differing.isEmpty {
            let what = differing.map { "\($0) \(PythonJSON(state[$0]!).render(indent: nil, sortKeys: true)) (this run: \(PythonJSON(expected[$0]!).render(indent: nil, sortKeys: true)))" }
            throw TrainError.badCheckpoint(path: directory.path, reason: "it was trained with \(what.joined(separator: ", ")), so the resumed run would see other batches; "
                + "resume with the same --seed, --batch, --seq-len and ranks x --grad-accum, or start a new --output")
        }
        try PEFTAdapterIO.loadWeights(into: adapters, directory: directory)
        let optimizer = try SafeTensorsFile(path: directory.appendingPathComponent(optimizerFile).path)
        let parameters = adapters.parameters
        for entry in parameters.entries {
            for (section, prefix) in [(2, "exp_avg."), (3, "exp_avg_sq.")] {
                guard optimizer.contains(prefix + entry.key), try optimizer.info(prefix + entry.key).shape == entry.shape else {
                    throw TrainError.badCheckpoint(path: optimizer.path, reason: "optimizer state for '\(entry.key)' is missing or has the wrong shape")
                }
                parameters.setValues(entry, try optimizer.floats(prefix + entry.key), section: section)
            }
        }
        var losses: [Double] = []
        if case .array(let items)? = state["log_history"] {
            losses = items.compactMap { $0["loss"]?.doubleValue }
        }
        return (step, losses)
    }

    /// The newest `checkpoint-N` under `output`, if any.
    public static func latest(in output: URL) -> URL? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? []
        let steps = names.compactMap { name -> Int? in
            name.hasPrefix("checkpoint-") ? Int(name.dropFirst("checkpoint-".count)) : nil
        }
        return steps.max().map { output.appendingPathComponent(directoryName(step: $0)) }
    }
}

/// Errors of training runs (checkpoints, options).
public enum TrainError: Error, CustomStringConvertible, Equatable {
    case badCheckpoint(path: String, reason: String)
    case badOptions(String)
    /// Writing checkpoint-N failed (a full disk); nothing was left under its name or in a temporary one.
    case checkpointNotWritten(path: String, reason: String)
    case ranksDiverged(step: Int, ranks: Int)
    /// A non-finite loss or gradient norm at `step`; nothing of that step was applied or saved.
    case diverged(step: Int, loss: Double, gradNorm: Double, lastCheckpoint: String?)

    public var description: String {
        switch self {
        case .ranksDiverged(let step, let ranks):
            return "after step \(step), the adapters of \(ranks) rank(s) differ from rank 0's: the MPI allreduce did not give every rank the same sum; nothing was saved for this step"
        case .badCheckpoint(let path, let reason): return "\(path): cannot resume: \(reason)."
        case .badOptions(let reason): return reason
        case .checkpointNotWritten(let path, let reason):
            return "\(path): the checkpoint could not be written (\(reason)); nothing partial was kept. Free space or choose another --output, then --resume."
        case .diverged(let step, let loss, let gradNorm, let checkpoint):
            let resume = checkpoint.map { "The last good checkpoint is \($0); continue from it with --resume and a lower --lr (or a --max-grad-norm)." }
                ?? "No checkpoint was saved before it; start again with a lower --lr (or a --max-grad-norm), and --save-every N to keep checkpoints."
            return "training diverged at step \(step): loss \(loss), gradient norm \(gradNorm). Training stopped before applying the step; no adapter was written. " + resume
        }
    }
}
