/// The memory a running executor really holds, per category, from the buffers themselves.
public enum LiveMemory {
    /// `datasetBytes`: what the training data holds in memory (`Batcher.heldBytes` plus the token
    /// file's index), which the executor does not know.
    public static func breakdown(executor: LlamaExecutor, datasetBytes: Int = 0) -> MemoryBreakdown {
        var result = MemoryBreakdown()
        let frozen = executor.model.frozenBytes
        result[.quantizedWeights] = frozen.quantized
        result[.otherFrozenWeights] = frozen.other
        if let lora = executor.lora {
            let section = lora.parameters.sectionBytes
            result[.trainableParameters] = section
            if lora.parameters.sections == 4 {
                result[.gradients] = section
                result[.optimizerState] = 2 * section
            }
        }
        result[.activations] = executor.arena.floats(prefix: "saved.") * 4
        // Workspace: arena scratch plus the executor's index buffers and RoPE tables.
        result[.workspace] = executor.arena.floats(prefix: "work.") * 4
            + LlamaExecutor.auxiliaryBytes(config: executor.model.config, shape: executor.shape)
        result[.dataset] = datasetBytes
        return result
    }

    /// Full fine-tuning: nothing is frozen; the arena's sections and the bf16 working copies.
    public static func breakdown(full: FullFineTuning, executor: LlamaExecutor, datasetBytes: Int = 0) -> MemoryBreakdown {
        var result = breakdown(executor: executor, datasetBytes: datasetBytes)
        result[.quantizedWeights] = 0
        result[.otherFrozenWeights] = 0
        let section = full.parameters.sectionBytes
        result[.trainableParameters] = section + full.workingCopyBytes
        if full.parameters.sections == 4 {
            result[.gradients] = section
            result[.optimizerState] = 2 * section
        }
        return result
    }
}
