/// The children of one supervisor, in start order, with an index by id.
///
/// Appending, looking up by id and removing are O(1) (amortised): every record knows its slot
/// (`ChildRecord.slotIndex`), a removed child leaves an empty slot, and the empty slots are
/// closed by a compaction once they are half the list, which renumbers the records it moves.
/// Iteration is in start order either way, and a child's position (for `restForOne`) is its
/// slot. So a dynamic supervisor with a million children pays per child, not per sibling, and
/// touches no other child's memory to remove one (a binary search over the slots did: at a
/// million children that was 20 cache misses per removal).
struct ChildList {
    /// Start order; a removed child's slot is `nil` until the next compaction.
    private(set) var slots: [ChildRecord?] = []
    private var byID: [String: ChildRecord] = [:]
    private var nextSequence = 0
    private var emptySlots = 0
    /// How many children are supervisors (the rest are workers).
    private(set) var supervisorCount = 0
    /// How many children are running or stopping (and how many significant ones are alive),
    /// kept up to date by the records themselves (see `ChildRecord.state`).
    let activeCount = ActiveChildCount()

    /// The number of children.
    var count: Int { byID.count }

    /// The child with `id`.
    subscript(id: String) -> ChildRecord? { byID[id] }

    /// The children in start order.
    var live: [ChildRecord] { slots.compactMap { $0 } }

    /// The children started after `record`, in start order.
    func children(after record: ChildRecord) -> [ChildRecord] {
        guard let index = index(of: record) else { return [] }
        return slots[(index + 1)...].compactMap { $0 }
    }

    mutating func append(_ record: ChildRecord) {
        record.sequence = nextSequence
        nextSequence += 1
        record.slotIndex = slots.count
        slots.append(record)
        byID[record.id] = record
        if record.spec.kind.isSupervisor { supervisorCount += 1 }
        record.activeCount = activeCount
        if record.isActive { activeCount.value += 1 }
        if record.isSignificant && (record.isActive || record.state == .restarting) { activeCount.significantAlive += 1 }
    }

    /// Forgets `record`. The caller holds a reference of its own, so nothing is deallocated
    /// inside this access.
    mutating func remove(_ record: ChildRecord) {
        guard let index = index(of: record) else { return }
        // In the list, so the id maps to it: one hash lookup removes it.
        withExtendedLifetime(byID.removeValue(forKey: record.id)) {}
        slots[index] = nil
        record.slotIndex = -1
        if record.spec.kind.isSupervisor { supervisorCount -= 1 }
        if record.isActive { activeCount.value -= 1 }
        if record.isSignificant && (record.isActive || record.state == .restarting) { activeCount.significantAlive -= 1 }
        record.activeCount = nil
        emptySlots += 1
        if emptySlots >= 64 && emptySlots * 2 >= slots.count { compact() }
    }

    /// Closes the empty slots, keeping start order, and renumbers the records that moved.
    /// Empty slots hold nothing, so nothing is released here.
    private mutating func compact() {
        var kept = 0
        for index in slots.indices {
            guard let record = slots[index] else { continue }
            if kept != index {
                slots.swapAt(kept, index)
                record.slotIndex = kept
            }
            kept += 1
        }
        slots.removeLast(slots.count - kept)
        emptySlots = 0
    }

    /// Where `record` stands in ``slots``, if it is in this list.
    func index(of record: ChildRecord) -> Int? {
        let index = record.slotIndex
        return index >= 0 && index < slots.count && slots[index] === record ? index : nil
    }
}

/// Counts of a supervisor's children kept by its records, which update them when their state
/// changes: so `countChildren()` and the `allSignificant` check are O(1).
final class ActiveChildCount {
    /// Children running or stopping.
    var value = 0
    /// Significant children running, stopping or waiting for their restart.
    var significantAlive = 0
}
